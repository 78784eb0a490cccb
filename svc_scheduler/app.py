"""Wiring of the scheduler process: database, bus, coordinator, recorder and gRPC server."""

from __future__ import annotations

import asyncio
import logging

from jetrl.bus import connect, consume, consume_together, declare
from jetrl.bus.topology import (
    SCHEDULER_CONTROL, SCHEDULER_DLQ, SCHEDULER_ROLLOUTS, SCHEDULER_SCORED, SCHEDULER_TEACHER, SCHEDULER_WEIGHTS,
)
from jetrl.config import Settings, parse_spec
from jetrl.lineage.db import check_database, make_engine
from jetrl.lineage.store import LineageStore
from jetrl.logs import log_fields
from jetrl.service import serve
from svc_scheduler.coordinator import Coordinator
from svc_scheduler.recorder import Recorder
from svc_scheduler.server import SchedulerServicer, register

log = logging.getLogger(__name__)
DEFAULT_PORT = 50051
RECONCILE_EVERY_S = 5.0


async def resume_runs(coordinator: Coordinator, store: LineageStore) -> None:
    """Pick up every run that was RUNNING when the last scheduler stopped."""
    for record in await store.list_runs():
        if record.state != "RUNNING":
            continue
        try:
            run = await asyncio.to_thread(coordinator.activate, record.run_id, parse_spec(record.spec_yaml))
        except Exception as exc:  # one broken run must not keep the others from resuming
            await store.set_run_state(record.run_id, "FAILED", f"cannot resume: {exc}")
            continue
        await coordinator.start(run)
        log.info("run resumed", extra=log_fields(run=record.run_id, version=record.policy_version))


async def main(settings: Settings) -> None:
    await check_database(settings.database_url)
    engine = make_engine(settings.database_url)
    store = LineageStore(engine)
    nc = await connect(settings, "svc_scheduler")
    js = nc.jetstream()
    await declare(js)
    coordinator = Coordinator(js, store, settings.rollout_addr)
    recorder = Recorder(coordinator, store)

    def worker(spec, handler):
        async def run(stop: asyncio.Event) -> None:
            await consume(js, spec, handler, stop)
        run.__name__ = spec.name
        return run

    def together(spec, handler):
        # samples are the bulk of the traffic: one transaction per fetch instead of per sample
        async def run(stop: asyncio.Event) -> None:
            await consume_together(js, spec, handler, stop, batch=128)
        run.__name__ = spec.name
        return run

    async def resume(stop: asyncio.Event) -> None:
        await resume_runs(coordinator, store)

    async def reconcile(stop: asyncio.Event) -> None:
        # Decisions are driven by events; this re-takes them from lineage every few seconds, so an
        # event that arrived while a run was being (re)activated cannot leave the run waiting.
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), RECONCILE_EVERY_S)
            except TimeoutError:
                for run_id in list(coordinator.runs):
                    await coordinator.seal_batches(run_id)
                    await coordinator.admit(run_id)

    async def close() -> None:
        await coordinator.close()
        await nc.drain()
        await engine.dispose()

    await serve(
        "svc_scheduler",
        settings.listen_or(DEFAULT_PORT),
        register(SchedulerServicer(coordinator, store, settings.reward_addr)),
        [
            resume,
            reconcile,
            together(SCHEDULER_ROLLOUTS, recorder.on_samples),
            worker(SCHEDULER_SCORED, recorder.on_scored),
            worker(SCHEDULER_WEIGHTS, recorder.on_weights),
            worker(SCHEDULER_TEACHER, recorder.on_teacher),
            worker(SCHEDULER_CONTROL, recorder.on_control),
            worker(SCHEDULER_DLQ, recorder.on_dead_letter),
        ],
        on_stop=close,
    )
