"""SchedulerService: create, inspect, stop and watch runs. Every request field is checked first
(jetrl/validate_rpc.py)."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc

from jetrl import validate_rpc as valid
from jetrl.bus.topology import subjects_in_use
from jetrl.collapse import collapse_warning
from jetrl.config import SpecError, dump_spec, parse_spec
from jetrl.digest import batch_digest
from jetrl.lineage.role import lending
from jetrl.lineage.store import LineageStore
from jetrl.service import Register, registering
from jetrl.spec_sections import MetricsSpec
from jetrl.states import GroupState, RunState
from jetrl.telemetry import current_trace_id
from jetrl.v1 import services_pb2, services_pb2_grpc
from jetrl.views import group_size
from svc_scheduler.active import prepare
from svc_scheduler.coordinator import Coordinator
from svc_scheduler.preflight import Peers

WATCH_INTERVAL_S = 0.5  # a progress query reads the whole run's samples: at most twice a second per watcher
WATCH_SHARE = 0.1  # ... and at most this share of the scheduler's time per watcher, however long the run
MAX_REASON = 1000  # a stop reason, kept as the run's message


def watch_pause(took_s: float) -> float:
    """Seconds a watcher waits after a progress query that took `took_s`: the query aggregates
    every sample of the run, so it grows with the run (run_stats: ~60 ms at 12,000 samples here); waiting
    in proportion keeps a watcher's share of the scheduler's time under WATCH_SHARE."""
    return max(WATCH_INTERVAL_S, took_s * (1 - WATCH_SHARE) / WATCH_SHARE)


# the proto enum, same names; keyed by str, as lineage rows carry the state
STATES: dict[str, int] = {state: services_pb2.RunState.Value(state) for state in RunState}


class SchedulerServicer(services_pb2_grpc.SchedulerServiceServicer):
    def __init__(self, coordinator: Coordinator, store: LineageStore, peers: Peers):
        self.coordinator = coordinator
        self.store = store
        self.peers = peers  # asked before a run starts whether they can serve it

    async def progress(self, run_id: str) -> services_pb2.RunProgress | None:
        async with lending(self.store.engine):  # five reads, a watcher's every interval: one connection
            return await self._progress(run_id)

    async def _progress(self, run_id: str) -> services_pb2.RunProgress | None:
        record = await self.store.runs.get_run(run_id)
        if record is None:
            return None
        stats = await self.store.reports.run_stats(run_id)
        counts = await self.store.groups.group_counts(run_id)
        latest = await self.store.reports.latest_evaluation(run_id)
        newest = await self.store.reports.version_points(run_id, since=max(record.policy_version, 1))
        nan = float("nan")
        end = time.time() if record.state == RunState.RUNNING else record.updated_at.timestamp()
        elapsed = max(end - record.created_at.timestamp(), 1e-9)
        generating = (stats.last_sample_at.timestamp() - record.created_at.timestamp()) if stats.last_sample_at else 0.0
        return services_pb2.RunProgress(
            run_id=run_id,
            # protobuf's stubs type Value() as int, the generated stub the field as the enum class
            state=STATES[record.state],  # type: ignore[arg-type]
            policy_version=record.policy_version,
            total_steps=record.total_steps,
            mean_reward=stats.mean_reward_last_batch if stats.mean_reward_last_batch is not None else float("nan"),
            heldout_accuracy=latest[1] if latest else -1.0,
            heldout_version=latest[0] if latest else -1,
            samples_per_second=stats.samples_generated / generating if generating > 0 else 0.0,
            samples_generated=stats.samples_generated,
            samples_trained=stats.samples_trained,
            elapsed_seconds=elapsed,
            groups_running=counts[GroupState.ADMITTED] + counts[GroupState.GENERATED],
            dead_letters=stats.dead_letters,
            message=record.message or "",
            mean_staleness=stats.mean_staleness,
            max_staleness=stats.max_staleness,
            partial_groups=counts[GroupState.PARTIAL],
            offpolicy_token_share=stats.offpolicy_token_share,
            stale_masked_tokens=stats.stale_masked_tokens,
            reward_failures=stats.reward_failures,
            last_reward_error=stats.last_reward_error or "",
            groups_dropped=counts[GroupState.DROPPED],
            groups_filtered=counts[GroupState.FILTERED],
            teacher_version=-1 if stats.teacher_version is None else stats.teacher_version,
            logprob_gap_mean=-1.0 if stats.logprob_gap_mean is None else stats.logprob_gap_mean,
            logprob_gap_max=-1.0 if stats.logprob_gap_max is None else stats.logprob_gap_max,
            entropy=newest[0].metrics.get("entropy", nan) if newest else nan,
            kl=newest[0].metrics.get("kl", nan) if newest else nan,
            top_answer_share=nan if not newest or newest[0].top_answer_share is None else newest[0].top_answer_share,
            collapse_warning=collapse_warning(newest[0], self._bounds(run_id, record.spec_yaml)) if newest else "",
        )

    def _bounds(self, run_id: str, spec_yaml: str) -> MetricsSpec:
        """The run's collapse bounds: its spec's `metrics` (the defaults for a spec that no longer
        parses, written by an older jetrl)."""
        if (spec := self.coordinator.spec(run_id)) is not None:
            return spec.metrics
        try:
            return parse_spec(spec_yaml).metrics
        except SpecError:
            return MetricsSpec()

    async def _run(self, run_id: str, context: grpc.aio.ServicerContext) -> services_pb2.Run:
        valid.run_id(run_id)
        record = await self.store.runs.get_run(run_id)
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no run {run_id!r}; ListRuns shows the known runs")
        return await self._as_run(record)

    async def _as_run(self, record) -> services_pb2.Run:
        return services_pb2.Run(
            run_id=record.run_id,
            spec_yaml=record.spec_yaml,
            progress=await self.progress(record.run_id),
            created_at=record.created_at.timestamp(),
        )

    async def CreateRun(self, request, context: grpc.aio.ServicerContext):
        if request.run_id:
            valid.run_id(request.run_id)
        try:
            spec = parse_spec(valid.text(request.spec_yaml, "spec_yaml", valid.MAX_SPEC))
        except SpecError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        run_id = request.run_id or f"{spec.name}-{uuid.uuid4().hex[:8]}"
        if await self.store.runs.get_run(run_id) is not None:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"run {run_id!r} exists; pick another run_id")
        if used := await subjects_in_use(self.coordinator.js, run_id):
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f"events were published under run id {run_id!r} before it existed ({', '.join(used)}): they "
                "may hold ids the run needs; pick another run_id",
            )
        if problems := await self.peers.problems(spec):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))
        try:
            run = await asyncio.to_thread(prepare, run_id, spec)
        except (OSError, ValueError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot start the run: {exc}")
        await self.store.runs.create_run(
            run_id,
            spec.name,
            dump_spec(spec),
            spec.train.steps,
            spec.train.batch_groups,
            group_size(spec),
            current_trace_id(),
        )
        # active only once its row exists: a reconcile tick or an event in between finds it whole
        await self.coordinator.start(run)
        return await self._run(run_id, context)

    async def GetRun(self, request, context: grpc.aio.ServicerContext):
        return await self._run(request.run_id, context)

    async def ListRuns(self, request, context: grpc.aio.ServicerContext):
        records = await self.store.runs.list_runs()
        return services_pb2.ListRunsResponse(runs=[await self._as_run(r) for r in records])

    async def StopRun(self, request, context: grpc.aio.ServicerContext):
        valid.run_id(request.run_id)
        valid.text(request.reason, "reason", MAX_REASON)
        record = await self.store.runs.get_run(request.run_id)
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no run {request.run_id!r}")
        if record.state != RunState.RUNNING:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"run {request.run_id!r} is {record.state}")
        await self.coordinator.stop(request.run_id, request.reason or "stopped by request")
        return await self._run(request.run_id, context)

    async def WatchRun(self, request, context: grpc.aio.ServicerContext):
        valid.run_id(request.run_id)
        last = None
        while True:
            seen = self.coordinator.changes
            started = time.monotonic()
            progress = await self.progress(request.run_id)
            took = time.monotonic() - started
            if progress is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no run {request.run_id!r}")
            # elapsed time always moves: compare the rest to send only real changes (and a heartbeat)
            key = _without_clock(progress)
            if key != last:
                last = key
                yield progress
            if progress.state != services_pb2.RUNNING:
                return
            # a busy run changes hundreds of times a second: one progress query per interval at most
            await asyncio.sleep(watch_pause(took))
            async with self.coordinator.changed:
                if self.coordinator.changes == seen:
                    try:
                        await asyncio.wait_for(self.coordinator.changed.wait(), timeout=2.0)
                    except TimeoutError:
                        pass

    async def GetBatchDigest(self, request, context: grpc.aio.ServicerContext):
        valid.run_id(request.run_id)
        valid.dotted_id(request.batch_id, "batch_id")
        if (kept := self.coordinator.sealed_digest(request.run_id, request.batch_id)) is not None:
            return services_pb2.BatchDigest(sha256=kept)
        if not await self.store.batches.is_sealed(request.run_id, request.batch_id):
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"run {request.run_id!r} sealed no batch {request.batch_id!r}"
            )
        return services_pb2.BatchDigest(sha256=batch_digest(await self.store.batches.load_batch(request.batch_id)))


def _without_clock(progress: services_pb2.RunProgress) -> bytes:
    copy = services_pb2.RunProgress()
    copy.CopyFrom(progress)
    copy.elapsed_seconds = 0
    copy.samples_per_second = 0
    return copy.SerializeToString(deterministic=True)


def register(servicer: SchedulerServicer) -> Register:
    return registering(
        services_pb2_grpc.add_SchedulerServiceServicer_to_server,
        servicer,
        services_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name,
    )
