"""The scheduler's decisions for each run: admit groups, seal batches, evaluate, finish.

Every decision is recomputed from the lineage rows, never from in-memory counters, so a restarted
scheduler carries on where the last one stopped: ids are deterministic (group n of a run is
`<run>.g<n>`, batch s is `<run>.b<s>`) and JetStream drops a re-published id as a duplicate.

Each decision is recorded first and published second. A crash between the two leaves a fact in
lineage whose event never went out; `reconcile` re-derives every such event from lineage (tasks
of generating groups, aborts of buffered attempts, complete groups, sealed batches, evaluations,
the end of a run) and publishes it again: on every start, and the cheap part every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace

from jetrl.bus import Kind, publish
from jetrl.config import RunSpec
from jetrl.crash import crash_point
from jetrl.digest import batch_digest
from jetrl.ids import batch_id, group_id
from jetrl.lineage.buffer import PartialBuffer
from jetrl.lineage.groups import NewGroup
from jetrl.lineage.models import Run
from jetrl.lineage.role import lending
from jetrl.lineage.sealed import sealed_batch
from jetrl.lineage.store import LineageStore
from jetrl.logs import log_fields
from jetrl.states import GroupState, RunState
from jetrl.telemetry import Attr, current_trace_id, current_traceparent, extract, link_from, tracer
from jetrl.v1 import events_pb2
from jetrl.views import group_size
from svc_scheduler.active import ActiveRun, make_tasks
from svc_scheduler.publishing import publish_abort, publish_end, publish_eval_request, publish_task, publish_tasks
from svc_scheduler.selection import Evidence

log = logging.getLogger(__name__)


def no_row(run_id: str) -> LookupError:
    """A run this scheduler decides for whose lineage row is gone (a run is active only once it exists)."""
    return LookupError(f"run {run_id} is active but has no row in lineage")


class Coordinator:
    def __init__(self, js, store: LineageStore):
        self.js = js
        self.store = store
        self.buffer = PartialBuffer(store.engine)
        self.runs: dict[str, ActiveRun] = {}
        # run -> admissions that failed after recording something: their tasks or abort may not have gone out
        self.unsure: dict[str, int] = {}
        self.changed = asyncio.Condition()
        self.changes = 0  # notifications so far: a watcher that looked away can tell it missed one
        # run -> batch id -> digest of the batch as published, until the trainer asks for it once
        # (GetBatchDigest): saves reading the batch back on every version; a miss reads lineage
        self.digests: dict[str, dict[str, str]] = {}
        # run -> group id -> the group as published to the reward stage (lineage's reading), until
        # scored; then with the scored event lineage recorded for it, until sealed: a batch of
        # groups all held here is built from them (jetrl.lineage.sealed), any other is read back
        self.assembled: dict[str, dict[str, events_pb2.PromptGroup]] = {}
        self.held: dict[str, dict[str, tuple[events_pb2.PromptGroup, events_pb2.ScoredGroup]]] = {}

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self, run: ActiveRun) -> None:
        """Begin (or, after a restart, resume) a run whose row exists: make it active, re-publish
        what may not have gone out, admit, seal."""
        self.runs[run.run_id] = run
        record = await self.record(run.run_id)
        if record.policy_version >= run.spec.train.steps:
            await self.finish(run.run_id)
            return
        await self.republish(run)
        await self.reconcile(run.run_id)
        every = run.spec.schedule.eval_every
        evaluated = await self.store.reports.latest_evaluation(run.run_id)
        due = record.policy_version - record.policy_version % every if every else 0
        if evaluated is None or evaluated[0] < due:
            await self.request_evaluation(run.run_id, due)

    async def record(self, run_id: str) -> Run:
        """The lineage row of an active run (a run is active only once its row exists)."""
        record = await self.store.runs.get_run(run_id)
        if record is None:
            raise no_row(run_id)
        return record

    def spec(self, run_id: str) -> RunSpec | None:
        """The spec of an active run; None when this scheduler is not deciding for it (ended, or
        not resumed yet)."""
        run = self.runs.get(run_id)
        return run.spec if run is not None else None

    def active(self) -> list[str]:
        return list(self.runs)

    async def reconcile(self, run_id: str) -> None:
        """Publish what lineage says is decided but may not have gone out, then decide anew:
        complete groups, batches to seal, groups to admit (a dozen reads: on one connection)."""
        async with lending(self.store.engine):
            await self._reconcile(run_id)

    async def _reconcile(self, run_id: str) -> None:
        run = self.runs.get(run_id)
        if run is None:
            return
        if (await self.record(run_id)).policy_version >= run.spec.train.steps:
            await self.finish(run_id)
            return
        if unsure := self.unsure.get(run_id):
            await self.republish(run)
            if self.unsure.get(run_id) == unsure:  # no admission or seal failed again meanwhile
                del self.unsure[run_id]
        await self.publish_groups(run_id, await self.store.groups.complete_groups(run_id, group_size(run.spec)))
        await self.seal_batches(run_id)
        await self.admit(run_id)

    async def notify(self) -> None:
        async with self.changed:
            self.changes += 1
            self.changed.notify_all()

    # ---- admission --------------------------------------------------------------------------

    async def _problems(
        self, run: ActiveRun, first: int, count: int, version: int, exclude: set[int]
    ) -> Sequence[int | None]:
        """The task problem of each of `count` new groups: None (group n takes problem n of the
        task's stream) or, with Thompson sampling, the pool prompts the posterior picks."""
        if run.selector is None or count == 0:
            return [None] * count
        evidence = [Evidence(p, v, s, f) for p, v, s, f in await self.store.groups.prompt_evidence(run.run_id)]
        rng = random.Random(f"{run.spec.seed}:select:{first}")  # a restart re-deciding group n draws alike
        return run.selector.choose(evidence, version, exclude, rng, k=count)

    async def admit(self, run_id: str) -> int:
        """Start what the staleness bound and over-provisioning allow (the partial buffer first),
        and abort what is no longer needed; returns how many groups started."""
        run = self.runs.get(run_id)
        if run is None:
            return 0
        async with run.lock:
            try:
                slots, resumed, version = await self._admit(run)
            except Exception:
                # a decision may be recorded whose tasks or abort never went out: reconcile re-publishes
                self.unsure[run_id] = self.unsure.get(run_id, 0) + 1
                raise
        if slots:
            log.info("admitted", extra=log_fields(run=run_id, groups=slots, resumed=resumed, version=version))
            await self.notify()
        return slots

    async def _admit(self, run: ActiveRun) -> tuple[int, int, int]:
        """`admit` under the run's lock: (groups started, of which resumed, the version they start at)."""
        run_id = run.run_id
        view = await self.store.groups.admission_view(run_id)
        if view is None:
            raise no_row(run_id)
        if view.state != RunState.RUNNING:
            return 0, 0, 0
        # accepted: generation complete (AReaL counts a rollout once it is done, whatever its
        # reward's latency), so APRIL aborts the spare groups as soon as the batch is generated
        running = view.admitted
        accepted = view.accepted(run.admission.batch_groups)
        version = view.policy_version
        if run.admission.must_abort(version, accepted, running):
            await self._abort_generating(run)
            return 0, 0, version
        slots = run.admission.slots(version, accepted, running)
        # the sealed-batch count matters only to what resumes, and only with `regenerate`
        stale_before = run.admission.stale_before(view.batches_sealed) if slots else None
        if resumed := await self.buffer.resume(run_id, slots, version, stale_before):
            crash_point("resume.recorded")
        in_flight = await self.store.groups.group_problems(run_id) if run.selector else {}
        await asyncio.gather(*(publish_task(self.js, run, r, in_flight.get(r.n)) for r in resumed))
        first = view.groups
        problems = await self._problems(run, first, slots - len(resumed), version, set(in_flight.values()))
        await self._admit_new(run, range(first, first + slots - len(resumed)), version, problems)
        return slots, len(resumed), version

    async def _admit_new(self, run: ActiveRun, numbers: range, version: int, problems: Sequence[int | None]) -> None:
        """Record new groups in one transaction, then publish their tasks; each group is its own
        trace, its whole life under the root span opened here."""
        spans, admitted, tasks = [], [], []
        try:
            for n, problem in zip(numbers, problems):
                group_tasks = make_tasks(run, n, version, problem)
                p = run.task.train_problem(n if problem is None else problem)
                span = tracer.start_span("group admit", context=otel_context.Context())
                span.set_attributes({Attr.RUN_ID: run.run_id, Attr.GROUP_ID: group_tasks[0].group_id})
                spans.append(span)
                with trace.use_span(span):
                    admitted.append(
                        NewGroup(
                            group_tasks[0],
                            p.answer,
                            current_traceparent(),
                            current_trace_id(),
                            analogous=p.analogous if len(group_tasks) > 1 else None,
                            problem=problem,
                        )
                    )
                tasks.append(group_tasks)
            await self.store.groups.admit_groups(admitted)
            crash_point("admit.recorded")
            await asyncio.gather(*(self._publish_in(span, run.run_id, t) for span, t in zip(spans, tasks)))
        finally:
            for span in spans:
                span.end()

    async def _publish_in(self, span: trace.Span, run_id: str, tasks: list[events_pb2.Task]) -> None:
        with trace.use_span(span):
            await publish_tasks(self.js, run_id, tasks)

    async def _abort_generating(self, run: ActiveRun) -> None:
        """APRIL: the open batches are full; stop every group still generating, keep its partials."""
        generating = [group_id(run.run_id, n) for n, *_ in await self.store.groups.admitted_groups(run.run_id)]
        aborted = await self.buffer.abort(run.run_id, generating)
        if not aborted:
            return
        crash_point("abort.recorded")
        await publish_abort(self.js, run.run_id, aborted)
        log.info("aborted", extra=log_fields(run=run.run_id, groups=len(aborted)))

    async def republish(self, run: ActiveRun) -> None:
        """After a restart: tasks, aborts and batches decided before it may never have been
        published; their ids are deterministic, so JetStream drops the ones that were (an abort
        sent twice stops nothing more: workers skip attempts they do not hold)."""
        problems = await self.store.groups.group_problems(run.run_id)
        for n, *_ in await self.store.groups.admitted_groups(run.run_id):
            await publish_task(self.js, run, await self.buffer.current(group_id(run.run_id, n)), problems.get(n))
        if waiting := await self.buffer.unaccounted(run.run_id):
            await publish_abort(self.js, run.run_id, waiting)
        for batch in await self.store.batches.untrained_batches(run.run_id):
            await self._publish_batch(await self.store.batches.load_batch(batch))

    async def publish_groups(
        self, run_id: str, group_ids: Sequence[str], recorded: Mapping[str, Sequence[events_pb2.Sample]] | None = None
    ) -> None:
        """Groups that have all their samples: out to the reward stage, then marked generated.
        `recorded`: groups whose every finished sample the caller has just stored, as these
        messages (not read back; the rest are)."""
        if not group_ids:
            return
        groups = await self.store.samples.load_groups(group_ids, recorded)
        parents = await self.store.groups.traceparents(group_ids)

        async def one(group_id: str) -> None:
            # back into the group's own trace: the fetch's span is shared by many groups
            with tracer.start_as_current_span(
                "group assemble", context=extract({"traceparent": parents[group_id]})
            ) as span:
                span.set_attributes({Attr.RUN_ID: run_id, Attr.GROUP_ID: group_id})
                await publish(self.js, run_id, Kind.GROUPS, groups[group_id], msg_id=group_id)

        if run_id in self.runs:  # before they go out: a group can be scored before the last is published
            self.assembled.setdefault(run_id, {}).update(groups)
        await asyncio.gather(*(one(g) for g in group_ids))
        await self.store.groups.mark_groups(group_ids, GroupState.GENERATED)

    def scored(self, scored: events_pb2.ScoredGroup, recorded: bool) -> None:
        """A scored event of a group was recorded; `recorded`: its rewards are the ones lineage
        holds (that transaction moved the group to "scored"), so a batch may be built from it."""
        run_id, group_id = scored.group.run_id, scored.group.group_id
        group = self.assembled.get(run_id, {}).pop(group_id, None)
        if group is not None and recorded and run_id in self.runs:
            self.held.setdefault(run_id, {})[group_id] = (group, scored)

    # ---- batches ----------------------------------------------------------------------------

    async def seal_batches(self, run_id: str) -> None:
        """Seal, in step order, every batch that B complete groups can fill: the oldest first."""
        run = self.runs.get(run_id)
        if run is None:
            return
        async with run.lock:
            try:
                await self._seal_batches(run)
            except Exception:
                # a batch may be sealed whose event never went out (a publish that met the batches
                # stream electing its leader): the redelivered event finds it sealed and goes on, so
                # only reconcile's re-publish sends it
                self.unsure[run_id] = self.unsure.get(run_id, 0) + 1
                raise

    async def _seal_batches(self, run: ActiveRun) -> None:
        """`seal_batches` under the run's lock."""
        run_id = run.run_id
        while True:
            step = await self.store.batches.batches_sealed(run_id)
            if step >= run.spec.train.steps:
                return
            # decided and recorded first, published second: a restart re-publishes the same batch
            sealed = await self.store.batches.seal_batch(
                run_id, step, run.spec.train.batch_groups, batch_id(run_id, step), run.spec.schedule.max_staleness
            )
            held = self.held.get(run_id, {})
            for g in sealed.expired:  # never batched: let it go
                held.pop(g, None)
            if not (ids := sealed.groups):
                return
            crash_point("seal.recorded")
            groups = [held.pop(g) for g in ids if g in held]
            if len(groups) == len(ids):
                batch = sealed_batch(run_id, batch_id(run_id, step), step, groups)
            else:
                batch = await self.store.batches.load_batch(batch_id(run_id, step))
            await self._publish_batch(batch)
            log.info("batch sealed", extra=log_fields(run=run_id, step=step))

    async def _publish_batch(self, batch: events_pb2.Batch) -> None:
        parents = await self.store.groups.traceparents([g.group.group_id for g in batch.groups])
        links = [link for tp in parents.values() if (link := link_from({"traceparent": tp})) is not None]
        # a batch joins B group traces: its own trace, linked to each of them
        with tracer.start_as_current_span("batch seal", context=otel_context.Context(), links=links) as span:
            span.set_attributes({Attr.RUN_ID: batch.run_id, Attr.BATCH_ID: batch.batch_id})
            if batch.run_id in self.runs:  # kept before the trainer can have the batch and ask
                self.digests.setdefault(batch.run_id, {})[batch.batch_id] = batch_digest(batch)
            await publish(self.js, batch.run_id, Kind.BATCHES, batch, msg_id=batch.batch_id)
            await self.store.batches.set_batch_trace(batch.batch_id, current_trace_id())

    def sealed_digest(self, run_id: str, batch_id: str) -> str | None:
        """The digest of a batch this scheduler published, once (then forgotten); None if not kept."""
        return self.digests.get(run_id, {}).pop(batch_id, None)

    # ---- evaluation and the end of a run ----------------------------------------------------

    async def request_evaluation(self, run_id: str, version: int) -> None:
        """Ask whichever rollout worker is alive for the held-out accuracy of `version` (or newer);
        its result comes back as an Evaluation event (Recorder.on_evaluated)."""
        await publish_eval_request(self.js, run_id, version)

    async def on_version(self, run_id: str, version: int) -> None:
        """A version was recorded; announcements may come out of order (one held by a scheduler
        that died comes back after its ack wait), so the run's end is judged from lineage."""
        run = self.runs.get(run_id)
        if run is None:
            return
        every = run.spec.schedule.eval_every
        if every and version % every == 0 and version < run.spec.train.steps:
            await self.request_evaluation(run_id, version)
        if (await self.record(run_id)).policy_version >= run.spec.train.steps:
            await self.finish(run_id)
            return
        await self.admit(run_id)

    async def on_evaluation(self, run_id: str, requested: int) -> None:
        run = self.runs.get(run_id)
        if run is not None and requested >= run.spec.train.steps:
            await self.finish(run_id)

    async def fail(self, run_id: str, reason: str) -> None:
        """End a run that cannot go on (state FAILED, the reason in its message); workers drop its work."""
        if run_id in self.runs:
            log.error("run failed", extra=log_fields(run=run_id, reason=reason))
            await self.stop(run_id, reason, state=RunState.FAILED)

    async def finish(self, run_id: str, message: str = "") -> None:
        """The last version is trained: complete the run once every version and its final
        evaluation are recorded (asked for here when it is not), or with `message` when the
        evaluation cannot be had."""
        run = self.runs.get(run_id)
        if run is None:
            return
        final = run.spec.train.steps
        if (missing := final - await self.store.versions.versions_recorded(run_id)) > 0:
            # an earlier announcement is still on its way: its arrival calls on_version again
            log.info("last version in, waiting for earlier ones", extra=log_fields(run=run_id, missing=missing))
            return
        if untrained := await self.store.batches.untrained_batches(run_id):
            # a version recorded without what it trained (its handling died between the two): the
            # announcement comes again, records it and calls on_version again
            log.info("waiting for what earlier versions trained", extra=log_fields(run=run_id, batches=untrained))
            return
        latest = await self.store.reports.latest_evaluation(run_id)
        if not message and (latest is None or latest[0] < final):
            await self.request_evaluation(run_id, final)
            return
        await self.end(run_id, RunState.COMPLETED, message)
        log.info("run completed", extra=log_fields(run=run_id, version=final))

    async def stop(self, run_id: str, reason: str, state: RunState = RunState.STOPPED) -> None:
        await self.end(run_id, state, reason)

    async def end(self, run_id: str, state: RunState, message: str) -> None:
        """Record the run's end, then tell every worker (again, after a restart: `announce_end`)."""
        await self.store.runs.set_run_state(run_id, state, message)
        crash_point("end.recorded")
        self.runs.pop(run_id, None)
        self.digests.pop(run_id, None)
        self.assembled.pop(run_id, None)
        self.held.pop(run_id, None)
        await self.announce_end(run_id, state, message)
        await self.notify()

    async def announce_end(self, run_id: str, state: RunState, message: str) -> None:
        await publish_end(self.js, run_id, state, message)
