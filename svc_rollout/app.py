"""Wiring of a rollout worker process: bus consumers, policies, gRPC server."""

from __future__ import annotations

import asyncio

from jetrl.bus import Kind, connect, consume, declare, follow
from jetrl.bus.topology import ROLLOUT_WORKERS
from jetrl.config import Settings
from jetrl.runs import RunSpecs
from jetrl.service import serve
from svc_rollout.policies import Policies
from svc_rollout.server import RolloutServicer, register
from svc_rollout.worker import RolloutWorker

DEFAULT_PORT = 50052


async def main(settings: Settings) -> None:
    nc = await connect(settings, f"svc_rollout-{settings.worker_id}")
    js = nc.jetstream()
    await declare(js)
    specs = RunSpecs(settings.scheduler_addr)
    policies = Policies(specs)
    worker = RolloutWorker(js, policies, settings.worker_id)

    async def tasks(stop: asyncio.Event) -> None:
        # one task at a time: a task is already a batch of G samples, and 2 cores are busy with it
        await consume(js, ROLLOUT_WORKERS, worker.on_task, stop, batch=1)

    async def weights(stop: asyncio.Event) -> None:
        await follow(js, Kind.WEIGHTS, lambda ann, d: policies.on_announcement(ann), stop)

    async def control(stop: asyncio.Event) -> None:
        await follow(js, Kind.CONTROL, worker.on_control, stop)

    async def close() -> None:
        await specs.close()
        await nc.drain()

    await serve(
        "svc_rollout", settings.listen_or(DEFAULT_PORT), register(RolloutServicer(worker)),
        [tasks, weights, control], on_stop=close,
    )
