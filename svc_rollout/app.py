"""Wiring of a rollout worker process: bus consumers, policies, gRPC server."""

from __future__ import annotations

import asyncio

from jetrl.bus import Kind, bus_probe, connect, consume, declare, follow
from jetrl.bus.topology import ROLLOUT_EVALS, ROLLOUT_WORKERS
from jetrl.config import Settings
from jetrl.rpc_security import ClientCredentials, ServerSecurity
from jetrl.runs import RunSpecs
from jetrl.service import serve, use_torch_threads
from jetrl.views import TEACHER
from svc_rollout.policies import Policies
from svc_rollout.server import RolloutServicer, register
from svc_rollout.weights import WeightSource
from svc_rollout.worker import RolloutWorker


async def main(settings: Settings) -> None:
    use_torch_threads(settings)
    nc = await connect(settings, f"svc_rollout-{settings.worker_id}")
    js = nc.jetstream()
    await declare(js, replicas=settings.stream_replicas)
    specs = RunSpecs(settings.scheduler_addr, ClientCredentials.of(settings))
    policies = Policies(specs, settings.rollout_concurrency, WeightSource.of(settings))
    worker = RolloutWorker(js, policies, settings.worker_id, settings.rollout_concurrency)

    async def tasks(stop: asyncio.Event) -> None:
        # each task in flight is a batch of G samples; the torch engine decodes the tasks in flight
        # as one batch (svc_rollout/coalesce.py), vLLM and the simulated engine batch them their own way
        await consume(js, ROLLOUT_WORKERS, worker.on_task, stop, batch=1, concurrency=settings.rollout_concurrency)

    async def evals(stop: asyncio.Event) -> None:
        await consume(js, ROLLOUT_EVALS, worker.on_eval_request, stop, batch=1)

    async def weights(stop: asyncio.Event) -> None:
        await follow(js, Kind.WEIGHTS, lambda ann, d: policies.on_announcement(ann), stop)

    async def teacher(stop: asyncio.Event) -> None:
        await follow(js, Kind.TEACHER, lambda ann, d: policies.on_announcement(ann, TEACHER), stop)

    async def control(stop: asyncio.Event) -> None:
        await follow(js, Kind.CONTROL, worker.on_control, stop)

    async def close() -> None:
        await specs.close()
        await nc.drain()

    await serve(
        "svc_rollout",
        settings.listen_as(settings.rollout_addr),
        register(RolloutServicer(worker)),
        [tasks, evals, weights, teacher, control],
        on_stop=close,
        probe=bus_probe(nc),
        security=ServerSecurity.of(settings),
    )
