"""The lineage recorder: the scheduler's bus handlers.

Each handler commits its rows first and reacts second (publish the complete group, seal a batch,
admit more work); the consume helper acks only after the handler returns, and every write and
publish is idempotent, so a redelivered event changes nothing.
"""

from __future__ import annotations

import logging

from jetrl.bus import DLQ_REASON, DLQ_SUBJECT, Delivery, InvalidEvent, Kind, publish
from jetrl.lineage.store import LineageStore, UnknownGroup, dead_letter_id
from jetrl.logs import log_fields
from jetrl.telemetry import current_trace_id, extract, trace_id_of, tracer
from jetrl.v1 import events_pb2
from jetrl.views import group_size
from svc_scheduler.coordinator import Coordinator

log = logging.getLogger(__name__)


class Recorder:
    def __init__(self, coordinator: Coordinator, store: LineageStore):
        self.coordinator = coordinator
        self.store = store

    async def _run_spec(self, run_id: str):
        """The spec of a RUNNING run; None when the run has ended (late events are kept, not acted on)."""
        run = self.coordinator.runs.get(run_id)
        if run is not None:
            return run.spec
        if await self.store.get_run(run_id) is None:
            raise InvalidEvent(f"unknown run {run_id!r}")
        return None

    async def on_samples(self, items: list[tuple[events_pb2.Sample, Delivery]]) -> dict[int, str]:
        """Record a fetch of samples in one transaction; publish each group that became complete."""
        rejected: dict[int, str] = {}
        specs = {}
        accepted: list[tuple[int, events_pb2.Sample]] = []
        for i, (sample, _) in enumerate(items):
            try:
                if sample.run_id not in specs:
                    specs[sample.run_id] = await self._run_spec(sample.run_id)
            except InvalidEvent as exc:
                rejected[i] = str(exc)
                continue
            spec = specs[sample.run_id]
            if spec is not None and sample.index >= group_size(spec):
                rejected[i] = f"sample index {sample.index} >= group size {group_size(spec)}"
            else:
                accepted.append((i, sample))
        # each sample keeps the trace of its own group, whatever else came in the same fetch
        progress = await self.store.record_samples([(s, trace_id_of(items[i][1].headers)) for i, s in accepted])
        for i, sample in accepted:
            if progress[(sample.group_id, sample.run_id)] is None:
                rejected[i] = f"sample {sample.sample_id!r} names group {sample.group_id!r}, unknown in its run"
        changed = set()
        for (group_id, run_id), p in progress.items():
            spec = specs[run_id]
            if spec is None or p is None:
                continue
            if p.complete >= group_size(spec) and p.state in ("admitted", "partial"):
                await self._publish_group(run_id, group_id)
                changed.add(run_id)  # one more group done: the batch may be generated, spares aborted
            elif p.accounted:
                changed.add(run_id)  # an aborted group's partials are all in: it may resume
        for run_id in changed:
            await self.coordinator.admit(run_id)
        if accepted:
            await self.coordinator.notify()
        return rejected

    async def _publish_group(self, run_id: str, group_id: str) -> None:
        group = await self.store.load_group(group_id)
        # back into the group's own trace: the fetch's span is shared by many groups
        parent = extract({"traceparent": await self.store.group_traceparent(group_id) or ""})
        with tracer.start_as_current_span("group assemble", context=parent) as span:
            span.set_attributes({"jetrl.run_id": run_id, "jetrl.group_id": group_id})
            await publish(self.coordinator.js, run_id, Kind.GROUPS, group, msg_id=group_id)
        await self.store.mark_group(group_id, "generated")

    async def on_scored(self, scored: events_pb2.ScoredGroup, delivery: Delivery) -> None:
        run_id = scored.group.run_id
        spec = await self._run_spec(run_id)
        if spec is not None and len(scored.group.samples) != group_size(spec):
            raise InvalidEvent(f"scored group has {len(scored.group.samples)} samples, run wants {group_size(spec)}")
        on_failure = spec.reward.on_failure if spec is not None else "zero"
        try:
            state = await self.store.record_scored(scored, current_trace_id(),
                                                   drop_uniform=spec is not None and spec.train.dynamic_sampling,
                                                   drop_failed=on_failure == "drop")
        except UnknownGroup as exc:
            raise InvalidEvent(str(exc)) from None
        if spec is None:
            return
        failed = [c for c in scored.calls if not c.ok]
        if failed:
            log.warning("reward failed", extra=log_fields(run=run_id, group=scored.group.group_id, state=state,
                                                          policy=on_failure, error=failed[0].error))
            if on_failure == "fail":
                await self.coordinator.fail(run_id, f"reward endpoint {failed[0].endpoint} failed for group "
                                                    f"{scored.group.group_id}: {failed[0].error} (reward.on_failure: fail)")
                return
            limit = spec.reward.max_dropped
            if limit is not None and (dropped := (await self.store.group_counts(run_id))["dropped"]) >= limit:
                await self.coordinator.fail(run_id, f"{dropped} groups dropped for failed rewards, the newest by "
                                                    f"{failed[0].endpoint}: {failed[0].error} (reward.max_dropped: "
                                                    f"{limit}); start the server again and create the run anew")
                return
        await self.coordinator.seal_batches(run_id)
        await self.coordinator.admit(run_id)

    async def on_teacher(self, ann: events_pb2.WeightsAnnouncement, delivery: Delivery) -> None:
        await self._run_spec(ann.run_id)
        await self.store.record_teacher(ann.run_id, ann.version)
        await self.coordinator.notify()

    async def on_weights(self, ann: events_pb2.WeightsAnnouncement, delivery: Delivery) -> None:
        await self._run_spec(ann.run_id)
        await self.store.record_version(ann, current_trace_id())
        log.info("version recorded", extra=log_fields(run=ann.run_id, version=ann.version, **dict(ann.metrics)))
        await self.coordinator.notify()
        await self.coordinator.on_version(ann.run_id, ann.version)

    async def on_control(self, control: events_pb2.Control, delivery: Delivery) -> None:
        """Carry out a STOP an operator published; the scheduler's own STOP/COMPLETED find the run ended."""
        if control.kind == events_pb2.Control.STOP and control.run_id in self.coordinator.runs:
            await self.coordinator.stop(control.run_id, control.reason or "stopped by a control event")

    async def on_dead_letter(self, payload: bytes, delivery: Delivery) -> None:
        reason = delivery.headers.get(DLQ_REASON) or "published straight to the dead-letter subject, no reason given"
        subject = delivery.headers.get(DLQ_SUBJECT, delivery.subject)
        await self.store.record_dead_letter(
            dead_letter_id(delivery.run_id, delivery.stream_seq), delivery.run_id, subject, reason, payload
        )
        log.warning("dead letter", extra=log_fields(run=delivery.run_id, subject=subject, reason=reason))
        await self.coordinator.notify()
