"""Wiring of the trainer process: batches consumer, checkpoints, gRPC server."""

from __future__ import annotations

import asyncio

from jetrl.bus import bus_probe, connect, consume, declare
from jetrl.bus.topology import TRAINER
from jetrl.config import Settings
from jetrl.runs import RunSpecs
from jetrl.service import serve, use_torch_threads
from svc_trainer.server import TrainerServicer, register
from svc_trainer.worker import Trainer


async def main(settings: Settings) -> None:
    use_torch_threads(settings)
    nc = await connect(settings, "svc_trainer")
    js = nc.jetstream()
    await declare(js)
    specs = RunSpecs(settings.scheduler_addr)
    trainer = Trainer(js, specs, settings.data_dir, settings.trainer_addr)

    async def batches(stop: asyncio.Event) -> None:
        await consume(js, TRAINER, trainer.on_batch, stop, batch=1)

    async def close() -> None:
        await specs.close()
        await nc.drain()

    await serve(
        "svc_trainer",
        settings.listen_as(settings.trainer_addr),
        register(TrainerServicer(trainer)),
        [batches],
        on_stop=close,
        probe=bus_probe(nc),
    )
