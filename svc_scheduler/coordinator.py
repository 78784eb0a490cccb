"""The scheduler's decisions for each run: admit groups, seal batches, evaluate, finish.

Every decision is recomputed from the lineage rows, never from in-memory counters, so a restarted
scheduler carries on where the last one stopped: ids are deterministic (group n of a run is
`<run>.g<n>`, batch s is `<run>.b<s>`) and JetStream drops a re-published id as a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from opentelemetry import context as otel_context

from jetrl.bus import Kind, publish
from jetrl.config import RunSpec
from jetrl.lineage.store import LineageStore
from jetrl.logs import log_fields
from jetrl.policy.load import encode_prompt, load_tokenizer
from jetrl.rpc import channel
from jetrl.tasks import make_task
from jetrl.telemetry import current_trace_id, current_traceparent, extract, link_from, tracer
from jetrl.v1 import events_pb2, services_pb2, services_pb2_grpc
from svc_scheduler.admission import Admission

log = logging.getLogger(__name__)


@dataclass
class ActiveRun:
    """What the scheduler keeps in memory for a RUNNING run (all of it derivable from the spec)."""

    run_id: str
    spec: RunSpec
    task: object
    tokenizer: object
    admission: Admission
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def group_id(run_id: str, n: int) -> str:
    return f"{run_id}.g{n:06d}"


def batch_id(run_id: str, step: int) -> str:
    return f"{run_id}.b{step:06d}"


class Coordinator:
    def __init__(self, js, store: LineageStore, rollout_addr: str):
        self.js = js
        self.store = store
        self.runs: dict[str, ActiveRun] = {}
        self.changed = asyncio.Condition()
        self._rollout_channel = channel(rollout_addr)
        self._rollout = services_pb2_grpc.RolloutServiceStub(self._rollout_channel)
        self._background: set[asyncio.Task] = set()

    # ---- lifecycle ------------------------------------------------------------------------

    def activate(self, run_id: str, spec: RunSpec) -> ActiveRun:
        """Load what deciding for this run needs; raises ValueError when the model dir is unusable."""

        run = ActiveRun(
            run_id=run_id,
            spec=spec,
            task=make_task(spec.task),
            tokenizer=load_tokenizer(spec.model.path),
            admission=Admission(
                max_staleness=spec.schedule.max_staleness,
                batch_groups=spec.train.batch_groups,
                max_concurrent=spec.schedule.max_concurrent,
                total_steps=spec.train.steps,
            ),
        )
        self.runs[run_id] = run
        return run

    async def start(self, run: ActiveRun) -> None:
        """Begin (or, after a restart, resume) a run: re-publish admitted tasks, admit, seal."""
        record = await self.store.get_run(run.run_id)
        if record.policy_version >= run.spec.train.steps:
            self.spawn(self.finish(run.run_id))
            return
        await self.republish_admitted(run)
        await self.admit(run.run_id)
        await self.seal_batches(run.run_id)
        if record.policy_version == 0 and await self.store.latest_evaluation(run.run_id) is None:
            self.spawn(self.evaluate(run.run_id, 0))

    def spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._rollout_channel.close()

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    # ---- admission --------------------------------------------------------------------------

    def make_task(self, run: ActiveRun, n: int, version: int) -> tuple[events_pb2.Task, str]:
        """Task for group n (deterministic), and its reference answer."""
        problem = run.task.train_problem(n)
        r = run.spec.rollout
        task = events_pb2.Task(
            run_id=run.run_id,
            group_id=group_id(run.run_id, n),
            prompt_id=problem.prompt_id,
            prompt=problem.prompt,
            prompt_token_ids=encode_prompt(run.tokenizer, problem.prompt),
            num_samples=r.group_size,
            policy_version=version,
            step=run.admission.step_of(n),
            sampling=events_pb2.SamplingParams(
                temperature=r.temperature, top_p=r.top_p, max_new_tokens=r.max_new_tokens,
                seed=(run.spec.seed * 1_000_003 + n) % (1 << 63),
            ),
            view="main",
        )
        return task, problem.answer

    async def admit(self, run_id: str) -> int:
        """Admit as many groups as the staleness bound allows; returns how many."""
        run = self.runs.get(run_id)
        if run is None:
            return 0
        async with run.lock:
            record = await self.store.get_run(run_id)
            if record.state != "RUNNING":
                return 0
            counts = await self.store.group_counts(run_id)
            running = counts["admitted"] + counts["generated"]
            accepted = counts["scored"] + counts["batched"] + counts["trained"]
            slots = run.admission.slots(record.policy_version, accepted, running)
            first = accepted + running
            for n in range(first, first + slots):
                task, reference = self.make_task(run, n, record.policy_version)
                # each group is its own trace: its whole life hangs under this root span
                with tracer.start_as_current_span("group admit", context=otel_context.Context()) as span:
                    span.set_attributes({"jetrl.run_id": run_id, "jetrl.group_id": task.group_id})
                    await self.store.admit_group(task, reference, current_traceparent(), current_trace_id())
                    await publish(self.js, run_id, Kind.TASKS, task, msg_id=task.group_id)
        if slots:
            log.info("admitted", extra=log_fields(run=run_id, groups=slots, version=record.policy_version))
            await self.notify()
        return slots

    async def republish_admitted(self, run: ActiveRun) -> None:
        """After a restart: a group admitted but maybe never published gets its task again."""
        for n, version, traceparent in await self.store.admitted_groups(run.run_id):
            task, _ = self.make_task(run, n, version)
            with tracer.start_as_current_span("group resume", context=extract({"traceparent": traceparent})):
                await publish(self.js, run.run_id, Kind.TASKS, task, msg_id=task.group_id)

    # ---- batches ----------------------------------------------------------------------------

    async def seal_batches(self, run_id: str) -> None:
        """Publish, in step order, every batch whose B groups are scored."""
        run = self.runs.get(run_id)
        if run is None:
            return
        b = run.spec.train.batch_groups
        async with run.lock:
            while True:
                counts = await self.store.group_counts(run_id)
                step = (counts["batched"] + counts["trained"]) // b
                # count first: loading the groups (every sample) only pays off once the batch is full
                if step >= run.spec.train.steps or await self.store.scored_in_step(run_id, step) < b:
                    return
                groups = await self.store.load_scored_step(run_id, step)
                links = []
                for g in groups:
                    tp = await self.store.group_traceparent(g.group.group_id)
                    if (link := link_from({"traceparent": tp or ""})) is not None:
                        links.append(link)
                batch = events_pb2.Batch(
                    run_id=run_id, batch_id=batch_id(run_id, step), step=step, policy_version=step, groups=groups
                )
                # a batch joins B group traces: its own trace, linked to each of them
                with tracer.start_as_current_span("batch seal", context=otel_context.Context(), links=links) as span:
                    span.set_attributes({"jetrl.run_id": run_id, "jetrl.batch_id": batch.batch_id})
                    await publish(self.js, run_id, Kind.BATCHES, batch, msg_id=batch.batch_id)
                    await self.store.record_batch(batch, current_trace_id())
                log.info("batch sealed", extra=log_fields(run=run_id, step=step, groups=len(groups)))

    # ---- evaluation and the end of a run ----------------------------------------------------

    async def evaluate(self, run_id: str, version: int, attempts: int = 5) -> bool:
        """Held-out accuracy of `version` from a rollout worker, recorded in lineage."""
        for attempt in range(attempts):
            try:
                reply = await self._rollout.Evaluate(
                    services_pb2.EvaluateRequest(run_id=run_id, min_version=version), timeout=600
                )
            except Exception as exc:  # a worker restarting must not fail the run: retry, then report
                log.warning("evaluation failed", extra=log_fields(run=run_id, version=version, error=str(exc)))
                await asyncio.sleep(2 * (attempt + 1))
                continue
            await self.store.record_evaluation(run_id, reply.version, reply.correct, reply.total)
            log.info("evaluated", extra=log_fields(run=run_id, version=reply.version, accuracy=reply.accuracy))
            await self.notify()
            return True
        return False

    async def on_version(self, run_id: str, version: int) -> None:
        run = self.runs.get(run_id)
        if run is None:
            return
        every = run.spec.schedule.eval_every
        if version >= run.spec.train.steps:
            self.spawn(self.finish(run_id))
            return
        if every and version % every == 0:
            self.spawn(self.evaluate(run_id, version))
        await self.admit(run_id)

    async def finish(self, run_id: str) -> None:
        run = self.runs[run_id]
        final = run.spec.train.steps
        latest = await self.store.latest_evaluation(run_id)
        ok = (latest is not None and latest[0] >= final) or await self.evaluate(run_id, final)
        message = "" if ok else "final held-out evaluation failed (is svc_rollout reachable?)"
        await self.store.set_run_state(run_id, "COMPLETED", message)
        await publish(
            self.js, run_id, Kind.CONTROL,
            events_pb2.Control(run_id=run_id, kind=events_pb2.Control.COMPLETED, reason=message),
            msg_id=f"{run_id}.completed",
        )
        self.runs.pop(run_id, None)
        log.info("run completed", extra=log_fields(run=run_id, version=final))
        await self.notify()

    async def stop(self, run_id: str, reason: str) -> None:
        await self.store.set_run_state(run_id, "STOPPED", reason)
        await publish(
            self.js, run_id, Kind.CONTROL,
            events_pb2.Control(run_id=run_id, kind=events_pb2.Control.STOP, reason=reason),
            msg_id=f"{run_id}.stopped",
        )
        self.runs.pop(run_id, None)
        await self.notify()
