"""The lineage recorder: the scheduler's bus handlers.

Each handler commits its rows first and reacts second (publish the complete group, seal a batch,
admit more work); the consume helper acks only after the handler returns, and every write and
publish is idempotent, so a redelivered event changes nothing. A crash between the commit and
the reaction is mended by the coordinator's reconcile, which re-derives reactions from lineage.
An event of a run that is RUNNING but not active yet (a restarted scheduler still resuming it)
waits: acted on before the run is, its reaction would be lost.
"""

from __future__ import annotations

import logging

from jetrl.bus import (
    CAUSE_FAILED,
    DLQ_CAUSE,
    DLQ_MSG_ID,
    DLQ_REASON,
    DLQ_SUBJECT,
    Delivery,
    InvalidEvent,
    Kind,
    Wait,
    parse_subject,
)
from jetrl.bus.topology import DUPLICATE_WINDOW_S
from jetrl.collapse import collapse_warning
from jetrl.config import RunSpec
from jetrl.crash import crash_point
from jetrl.ids import dead_letter_id
from jetrl.lineage.batches import Scored
from jetrl.lineage.samples import GroupProgress, UnknownGroup
from jetrl.lineage.store import LineageStore
from jetrl.logs import log_fields
from jetrl.metrics import VERSIONS_RECORDED
from jetrl.states import IN_FLIGHT, FinishReason, GroupState, RunState
from jetrl.telemetry import current_trace_id, trace_id_of
from jetrl.v1 import events_pb2
from jetrl.views import group_size, split
from svc_scheduler.coordinator import Coordinator
from svc_scheduler.run_metrics import RunMetrics

log = logging.getLogger(__name__)


def scored_state(scored: events_pb2.ScoredGroup, dynamic_sampling: bool, drop_failed: bool) -> GroupState:
    """What becomes of a scored group: "dropped" when an endpoint failed and the run drops such
    groups; "filtered" under dynamic sampling when its trained rewards are all equal (no signal);
    else "scored". Dropped and filtered groups are never trained, and admission replaces them."""
    if drop_failed and any(not c.ok for c in scored.calls):
        return GroupState.DROPPED
    trained = [i for view, idx in split(scored.group) if view.trained for i in idx]
    if dynamic_sampling and len({scored.rewards[i] for i in trained}) <= 1:
        return GroupState.FILTERED
    return GroupState.SCORED


def _calls_problem(scored: events_pb2.ScoredGroup, spec: RunSpec) -> str | None:
    """Why the group cannot have been scored by the run's reward endpoints: one call per endpoint
    of the spec, in its order (the built-in server's address is the reward stage's setting)."""
    called = [c.endpoint for c in scored.calls]
    if configured := [e.address for e in spec.reward.endpoints]:
        if called != configured:
            return f"scored by {called}, but the run's reward endpoints are {configured}"
    elif len(called) > 1:
        return f"scored by {called}, but the run has one reward endpoint (the built-in server)"
    return None


def _recorded_whole(
    stored: list[events_pb2.Sample], progress: dict[tuple[str, str], GroupProgress | None]
) -> dict[str, list[events_pb2.Sample]]:
    """The groups of which this fetch stored every finished sample, with those samples: a group
    generated in one first attempt, whose rows are exactly these messages, need not be read back.
    Any other (an earlier attempt's or view's samples in lineage, a stored row a message may not
    match) is left out and read back."""
    finished: dict[tuple[str, str], list[events_pb2.Sample]] = {}
    for s in stored:
        if s.finish_reason != FinishReason.ABORTED:
            finished.setdefault((s.group_id, s.run_id), []).append(s)
    return {
        group: samples
        for (group, run), samples in finished.items()
        if (p := progress.get((group, run))) is not None
        and all(s.attempt == 0 for s in samples)
        and len(samples) == len({s.index for s in samples}) == p.complete
    }


class Recorder:
    def __init__(self, coordinator: Coordinator, store: LineageStore, run_metrics: RunMetrics | None = None):
        self.coordinator = coordinator
        self.store = store
        self.run_metrics = run_metrics  # where versions' training metrics go besides lineage (TensorBoard)

    async def _run_spec(self, run_id: str) -> RunSpec | None:
        """The spec of a RUNNING run; None when the run has ended (late events are kept, not acted on)."""
        if (spec := self.coordinator.spec(run_id)) is not None:
            return spec
        record = await self.store.runs.get_run(run_id)
        if record is None:
            raise InvalidEvent(f"unknown run {run_id!r}")
        if record.state == RunState.RUNNING:
            raise Wait(f"run {run_id} is RUNNING but not active yet (the scheduler is resuming it)")
        return None

    async def on_rollouts(self, items: list[tuple[events_pb2.Rollout, Delivery]]) -> dict[int, str]:
        """Record a fetch of rollouts (each one task attempt's samples) in one transaction; publish
        each group that became complete. A rollout holding a sample the run's model cannot have
        generated is refused whole: none of it is stored."""
        rejected: dict[int, str] = {}
        specs = {}
        accepted: list[tuple[int, events_pb2.Sample]] = []
        for i, (rollout, _) in enumerate(items):
            try:
                if rollout.run_id not in specs:
                    specs[rollout.run_id] = await self._run_spec(rollout.run_id)
            except InvalidEvent as exc:
                rejected[i] = str(exc)
                continue
            spec = specs[rollout.run_id]
            if spec is not None and (problem := self._rollout_problem(rollout, spec)):
                rejected[i] = problem
            else:
                accepted.extend((i, sample) for sample in rollout.samples)
        # each sample keeps the trace of its own group, whatever else came in the same fetch
        progress = await self.store.samples.record_samples([(s, trace_id_of(items[i][1].headers)) for i, s in accepted])
        crash_point("samples.recorded")
        for i, sample in accepted:
            if (p := progress[(sample.group_id, sample.run_id)]) is None:
                rejected.setdefault(i, f"rollout names group {sample.group_id!r}, unknown in its run")
            elif (why := p.refused.get((sample.sample_id, sample.attempt))) is not None:
                rejected.setdefault(i, why)
        changed: set[str] = set()
        complete: dict[str, list[str]] = {}
        for (group_id, run_id), p in progress.items():
            spec = specs[run_id]
            if spec is None or p is None:
                continue
            if p.complete >= group_size(spec) and p.state in IN_FLIGHT:
                complete.setdefault(run_id, []).append(group_id)
                changed.add(run_id)  # one more group done: the batch may be generated, spares aborted
            elif p.accounted:
                changed.add(run_id)  # an aborted group's partials are all in: it may resume
        recorded = _recorded_whole([s for i, s in accepted if i not in rejected], progress)
        for run_id, group_ids in complete.items():
            await self.coordinator.publish_groups(run_id, group_ids, recorded)
        for run_id in changed:
            await self.coordinator.admit(run_id)
        if accepted:
            await self.coordinator.notify()
        return rejected

    def _rollout_problem(self, rollout: events_pb2.Rollout, spec: RunSpec) -> str | None:
        """What makes a sample of the rollout one the run cannot have: an index past its group, or
        a completion its model did not generate (by its tokenizer)."""
        run = self.coordinator.runs.get(rollout.run_id)  # None: it ended meanwhile, nothing will be made of it
        for sample in rollout.samples:
            if sample.index >= group_size(spec):
                return f"sample index {sample.index} >= group size {group_size(spec)}"
            if run is not None and (
                problem := run.tokenizer.completion_problem(
                    sample.prompt_token_ids, sample.completion_token_ids, sample.text
                )
            ):
                return f"sample {sample.sample_id!r}: {problem}"
        return None

    async def on_scored(self, items: list[tuple[events_pb2.ScoredGroup, Delivery]]) -> dict[int, str]:
        """Record a fetch of scored groups in one transaction, apply each run's reward-failure
        policy, then seal and admit once per run."""
        rejected: dict[int, str] = {}
        specs: dict[str, RunSpec | None] = {}
        todo: list[tuple[int, Scored]] = []
        for i, (scored, delivery) in enumerate(items):
            run_id = scored.group.run_id
            try:
                if run_id not in specs:
                    specs[run_id] = await self._run_spec(run_id)
            except InvalidEvent as exc:
                rejected[i] = str(exc)
                continue
            spec = specs[run_id]
            if spec is not None and len(scored.group.samples) != group_size(spec):
                rejected[i] = f"scored group has {len(scored.group.samples)} samples, run wants {group_size(spec)}"
                continue
            if spec is not None and (problem := _calls_problem(scored, spec)):
                rejected[i] = problem
                continue
            state = scored_state(
                scored,
                dynamic_sampling=spec is not None and spec.train.dynamic_sampling,
                drop_failed=spec is not None and spec.reward.on_failure == "drop",
            )
            # each group's rewards keep the trace of its own scored event, whatever else came in the fetch
            todo.append((i, Scored(scored, state, trace_id_of(delivery.headers))))
        recorded = await self.store.batches.record_scored_groups([item for _, item in todo])
        changed: dict[str, None] = {}  # the runs to seal and admit for, in the fetch's order
        for (i, item), result in zip(todo, recorded.states):
            run_id = item.scored.group.run_id
            if isinstance(result, UnknownGroup):
                rejected[i] = str(result)
                continue
            self.coordinator.scored(item.scored, item.scored.group.group_id in recorded.moved)
            if self.coordinator.spec(run_id) is not None and not await self._failed_rewards(item.scored, result):
                changed[run_id] = None
        for run_id in changed:
            await self.coordinator.seal_batches(run_id)
            await self.coordinator.admit(run_id)
        return rejected

    async def _failed_rewards(self, scored: events_pb2.ScoredGroup, state: str) -> bool:
        """Apply the run's `reward.on_failure` policy to a group an endpoint failed for; True when
        that ended the run."""
        failed = [c for c in scored.calls if not c.ok]
        spec = self.coordinator.spec(run_id := scored.group.run_id)
        if not failed or spec is None:
            return spec is None
        on_failure = spec.reward.on_failure
        log.warning(
            "reward failed",
            extra=log_fields(
                run=run_id, group=scored.group.group_id, state=state, policy=on_failure, error=failed[0].error
            ),
        )
        if on_failure == "fail":
            await self.coordinator.fail(
                run_id,
                f"reward endpoint {failed[0].endpoint} failed for group "
                f"{scored.group.group_id}: {failed[0].error} (reward.on_failure: fail)",
            )
            return True
        limit = spec.reward.max_dropped
        if (
            limit is not None
            and (dropped := (await self.store.groups.group_counts(run_id))[GroupState.DROPPED]) >= limit
        ):
            await self.coordinator.fail(
                run_id,
                f"{dropped} groups dropped for failed rewards, the newest by "
                f"{failed[0].endpoint}: {failed[0].error} (reward.max_dropped: "
                f"{limit}); start the server again and create the run anew",
            )
            return True
        # judged only on a failure (only a failure raises the share), and from one batch's worth of groups on
        share = spec.reward.max_failed_share
        failing, kept = await self.store.reports.reward_failure_share(run_id)
        if kept >= spec.train.batch_groups and failing > share * kept:
            await self.coordinator.fail(
                run_id,
                f"reward endpoint {failed[0].endpoint} failed: {failed[0].error}; "
                f"{failing} of {kept} groups scored so far had a failed endpoint "
                f"(reward.max_failed_share: {share:g})",
            )
            return True
        return False

    async def on_teacher(self, ann: events_pb2.WeightsAnnouncement, delivery: Delivery) -> None:
        spec = await self._run_spec(ann.run_id)
        if spec is not None and spec.teacher is None:
            raise InvalidEvent(f"teacher v{ann.version} announced for run {ann.run_id}, which has no teacher")
        if spec is not None and not 1 <= ann.version <= spec.train.steps:
            raise InvalidEvent(f"teacher v{ann.version} announced for a run of {spec.train.steps} versions")
        await self.store.versions.record_teacher(ann.run_id, ann.version)
        await self.coordinator.notify()

    async def on_weights(self, ann: events_pb2.WeightsAnnouncement, delivery: Delivery) -> None:
        """Record a version the trainer made: the next of its run, from the batch lineage sealed;
        admit the groups it lets start, record what it trained, and write its training metrics
        (before the run may end and its writer close)."""
        admit_first = False
        if (spec := await self._run_spec(ann.run_id)) is not None:
            # a run going on records its versions in order (an ended one whatever has its batch)
            head = (await self.coordinator.record(ann.run_id)).policy_version
            if ann.version > head + 1:
                raise Wait(f"v{ann.version} of {ann.run_id} announced before v{head + 1} was recorded")
            # a new version that is not the last lets the next groups start before what it trained
            # is recorded (the bulk of its writes); any other (the last, one announced again) records
            # everything first: the run may end on it, and it ends only with every version's
            # trained samples recorded (Coordinator.finish)
            admit_first = ann.version == head + 1 and ann.version < spec.train.steps
        if (problem := await self.store.versions.announcement_problem(ann)) is not None:
            raise InvalidEvent(problem)
        await self.store.versions.record_head(ann, current_trace_id())
        crash_point("version.head")
        if admit_first:
            await self.coordinator.on_version(ann.run_id, ann.version)
        await self.store.versions.record_trained(ann)
        log.info("version recorded", extra=log_fields(run=ann.run_id, version=ann.version, **dict(ann.metrics)))
        VERSIONS_RECORDED.add(1, {"run_id": ann.run_id})
        if spec is not None:
            # this version and the one before (its samples/s): one read for the curves and the warning
            points = await self.store.reports.version_points(ann.run_id, since=ann.version - 1)
            if self.run_metrics is not None:
                await self.run_metrics.on_version(ann.run_id, spec, ann.version, points)
            for point in points:
                if point.version == ann.version and (warning := collapse_warning(point, spec.metrics)):
                    log.warning("collapse warning", extra=log_fields(run=ann.run_id, warning=warning))
        await self.coordinator.notify()
        if not admit_first:  # the run may end here, and its metrics writer close: after the metrics
            await self.coordinator.on_version(ann.run_id, ann.version)

    async def on_evaluated(self, ev: events_pb2.Evaluation, delivery: Delivery) -> None:
        spec = await self._run_spec(ev.run_id)
        await self.store.reports.record_evaluation(ev.run_id, ev.version, ev.correct, ev.total)
        accuracy = ev.correct / max(ev.total, 1)
        log.info(
            "evaluated", extra=log_fields(run=ev.run_id, version=ev.version, accuracy=accuracy, worker=ev.worker_id)
        )
        if spec is not None and self.run_metrics is not None:
            await self.run_metrics.on_evaluation(ev.run_id, spec, ev.version, accuracy)
        await self.coordinator.notify()
        await self.coordinator.on_evaluation(ev.run_id, ev.requested)

    async def on_control(self, control: events_pb2.Control, delivery: Delivery) -> None:
        """Carry out a STOP an operator published; the scheduler's own STOP/COMPLETED find the run
        ended. Either way the run is over: its metrics writer closes."""
        if control.kind == events_pb2.Control.STOP and self.coordinator.spec(control.run_id) is not None:
            await self.coordinator.stop(control.run_id, control.reason or "stopped by a control event")
        if control.kind in (events_pb2.Control.STOP, events_pb2.Control.COMPLETED) and self.run_metrics is not None:
            self.run_metrics.close(control.run_id)

    async def on_dead_letter(self, payload: bytes, delivery: Delivery) -> None:
        reason = delivery.headers.get(DLQ_REASON) or "published straight to the dead-letter subject, no reason given"
        subject = delivery.headers.get(DLQ_SUBJECT, delivery.subject)
        await self.store.reports.record_dead_letter(
            dead_letter_id(delivery.run_id, delivery.stream_seq), delivery.run_id, subject, reason, payload
        )
        log.warning("dead letter", extra=log_fields(run=delivery.run_id, subject=subject, reason=reason))
        await self.coordinator.notify()
        if delivery.headers.get(DLQ_CAUSE) == CAUSE_FAILED:
            await self._failed_for_good(delivery.run_id, subject, reason, payload)
        elif (taken := delivery.headers.get(DLQ_MSG_ID, "")).startswith(f"{delivery.run_id}."):
            await self._id_taken(delivery.run_id, subject, reason, taken)

    async def _id_taken(self, run_id: str, subject: str, reason: str, taken: str) -> None:
        """A refused event carried one of the run's own message ids (every id of a run starts
        with it: jetrl.ids). JetStream now drops any event published under that id for its
        duplicate window, the real one the run waits for included: fail the run with the reason
        rather than wait for it."""
        if self.coordinator.spec(run_id) is None:
            return  # the run ended: nothing waits for the id
        await self.coordinator.fail(
            run_id,
            f"an event on {subject} was refused ({reason}) under the message id {taken!r}; the event "
            f"the run needs under that id would now be dropped as its duplicate for "
            f"{DUPLICATE_WINDOW_S / 3600:g} h, so the run cannot go on (a forged or broken publisher: "
            "check who may publish on the bus, docs/security.md)",
        )

    async def _failed_for_good(self, run_id: str, subject: str, reason: str, payload: bytes) -> None:
        """An event of the run was handled and failed every time: it will never come again (its id
        is deterministic), so waiting for its consequence would be a stall. A failed final
        evaluation still completes the run (with the reason); any other failure fails it."""
        try:
            kind = parse_subject(subject)[1]
        except ValueError:
            kind = None
        if kind is Kind.EVALS:
            requested = events_pb2.EvalRequest.FromString(payload).min_version
            spec = self.coordinator.spec(run_id)
            if spec is not None and requested >= spec.train.steps:
                await self.coordinator.finish(run_id, f"final held-out evaluation failed: {reason}")
            return
        await self.coordinator.fail(run_id, f"an event on {subject} failed for good, the run cannot go on: {reason}")
