"""Wiring of the scheduler process: database, bus, coordinator, recorder and gRPC server."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from jetrl.bus import bus_probe, connect, consume, consume_together, declare, is_transient, topology
from jetrl.config import Settings, parse_spec
from jetrl.lineage import statistics
from jetrl.lineage.db import check_database, make_engine
from jetrl.lineage.role import lending
from jetrl.lineage.store import LineageStore
from jetrl.logs import log_fields
from jetrl.rpc_security import ServerSecurity
from jetrl.service import serve
from jetrl.states import RunState
from svc_scheduler.active import prepare
from svc_scheduler.coordinator import Coordinator
from svc_scheduler.preflight import Peers
from svc_scheduler.recorder import Recorder
from svc_scheduler.run_metrics import RunMetrics
from svc_scheduler.server import SchedulerServicer, register

log = logging.getLogger(__name__)
RECONCILE_EVERY_S = 5.0
RECONCILE_GIVE_UP = 3  # ticks in a row a run's reconcile may fail (not for an outage) before it fails


async def resume_runs(coordinator: Coordinator, store: LineageStore) -> None:
    """Pick up every run that was RUNNING when the last scheduler stopped, and tell the workers
    again of runs that ended lately (the last scheduler may have died before it did)."""
    recent = datetime.now(UTC) - timedelta(seconds=topology.DUPLICATE_WINDOW_S)
    for record in await store.runs.list_runs():
        if record.state != RunState.RUNNING:
            if record.updated_at >= recent:
                await coordinator.announce_end(record.run_id, RunState(record.state), record.message)
            continue
        try:
            await coordinator.start(await asyncio.to_thread(prepare, record.run_id, parse_spec(record.spec_yaml)))
        except Exception as exc:
            if is_transient(exc):
                raise  # an outage: the resume worker is started again and retries every run
            # a run that can never be resumed would leave its events waiting for ever, and one
            # broken run must not keep the others from resuming
            await coordinator.end(record.run_id, RunState.FAILED, f"cannot resume: {type(exc).__name__}: {exc}")
            continue
        log.info("run resumed", extra=log_fields(run=record.run_id, version=record.policy_version))


async def reconcile_runs(coordinator: Coordinator, failures: dict[str, int]) -> None:
    """One reconcile tick over every active run. An outage postpones a run's reconcile to the next
    tick; any other error counts against the run alone (`failures`, per run, reset on success),
    and a run that fails RECONCILE_GIVE_UP ticks in a row ends FAILED with the error, so neither
    it nor the scheduler stays stuck on it."""
    for run_id in coordinator.active():
        try:
            await coordinator.reconcile(run_id)
        except Exception as exc:
            if is_transient(exc):
                log.warning("reconcile postponed", extra=log_fields(run=run_id, error=repr(exc)[:300]))
                continue
            failures[run_id] = failures.get(run_id, 0) + 1
            log.error("reconcile failed", exc_info=exc, extra=log_fields(run=run_id, times=failures[run_id]))
            if failures[run_id] >= RECONCILE_GIVE_UP:
                await coordinator.fail(run_id, f"the scheduler cannot reconcile the run: {type(exc).__name__}: {exc}")
                del failures[run_id]
        else:
            failures.pop(run_id, None)


async def refresh_statistics(engine: AsyncEngine) -> None:
    """Keep the planner statistics of the lineage tables fresh (jetrl.lineage.statistics). A
    failure costs only plans, never a run: it is logged, and the next tick tries again."""
    try:
        if analyzed := await statistics.refresh(engine):
            log.info("lineage statistics refreshed", extra=log_fields(tables=analyzed))
    except Exception as exc:
        log.warning("could not refresh lineage statistics", extra=log_fields(error=repr(exc)[:300]))


async def main(settings: Settings) -> None:
    await check_database(settings.database_url)
    engine = make_engine(settings.database_url)
    store = LineageStore(engine)
    nc = await connect(settings, "svc_scheduler")
    js = nc.jetstream()
    await declare(js, replicas=settings.stream_replicas)
    coordinator = Coordinator(js, store)
    run_metrics = RunMetrics(settings.data_dir)
    recorder = Recorder(coordinator, store, run_metrics)

    def worker(spec, handler, consumes=consume, **options):
        """A worker named after its consumer that runs `consumes` (one event at a time by default);
        the store calls of one handling share a connection (`lending`)."""

        async def handle(*event):
            async with lending(engine):
                return await handler(*event)

        async def run(stop: asyncio.Event) -> None:
            await consumes(js, spec, handle, stop, **options)

        run.__name__ = spec.name
        return run

    async def resume(stop: asyncio.Event) -> None:
        await refresh_statistics(engine)  # a resumed run's first plans, on a database analyzed or not
        await resume_runs(coordinator, store)

    async def reconcile(stop: asyncio.Event) -> None:
        # Decisions are driven by events; this re-takes them from lineage every few seconds, so a
        # reaction lost between a commit and its publish cannot leave the run waiting.
        failures: dict[str, int] = {}
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), RECONCILE_EVERY_S)
            except TimeoutError:
                await refresh_statistics(engine)
                await reconcile_runs(coordinator, failures)

    bus = bus_probe(nc)

    async def probe() -> str | None:
        if problem := await bus():
            return problem
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            return f"Postgres: {exc!r}"[:300]
        return None

    async def close() -> None:
        run_metrics.close_all()
        await nc.drain()
        await engine.dispose()

    await serve(
        "svc_scheduler",
        settings.listen_as(settings.scheduler_addr),
        register(SchedulerServicer(coordinator, store, Peers.of(settings))),
        [
            resume,
            reconcile,
            # rollouts and scored groups are the bulk of the traffic: one transaction per fetch, not per
            # event. 16 rollouts (128 samples at G = 8): a fetch of 64 blocked the loop long enough to
            # double the per-version overhead (jetrl bench control-plane: 385-437 ms p50 at 16, 833-1,131 at 64)
            worker(topology.SCHEDULER_ROLLOUTS, recorder.on_rollouts, consume_together, batch=16),
            worker(topology.SCHEDULER_SCORED, recorder.on_scored, consume_together, batch=64),
            worker(topology.SCHEDULER_WEIGHTS, recorder.on_weights),
            worker(topology.SCHEDULER_TEACHER, recorder.on_teacher),
            worker(topology.SCHEDULER_CONTROL, recorder.on_control),
            worker(topology.SCHEDULER_DLQ, recorder.on_dead_letter),
            worker(topology.SCHEDULER_EVALUATED, recorder.on_evaluated),
        ],
        on_stop=close,
        probe=probe,
        security=ServerSecurity.of(settings),
    )
