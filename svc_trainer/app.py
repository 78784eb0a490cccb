"""Wiring of the trainer process: batches consumer, checkpoints, gRPC server."""

from __future__ import annotations

import asyncio
import os
import signal

from jetrl.bus import Kind, bus_probe, connect, consume, declare, follow
from jetrl.bus.topology import TRAINER
from jetrl.config import Settings
from jetrl.rpc_security import ClientCredentials, ServerSecurity
from jetrl.runs import RunSpecs
from jetrl.service import serve, use_torch_threads
from svc_trainer.server import TrainerServicer, register
from svc_trainer.worker import Trainer


async def main(settings: Settings) -> None:
    use_torch_threads(settings)
    nc = await connect(settings, "svc_trainer")
    js = nc.jetstream()
    await declare(js, replicas=settings.stream_replicas)
    specs = RunSpecs(settings.scheduler_addr, ClientCredentials.of(settings))
    trainer = Trainer(
        js,
        specs,
        settings.data_dir,
        settings.trainer_addr,
        ranks=settings.trainer_ranks,
        collective_timeout_s=settings.collective_timeout_s,
    )
    on_bus = bus_probe(nc)

    async def batches(stop: asyncio.Event) -> None:
        await consume(js, TRAINER, trainer.on_batch, stop, batch=1)

    async def control(stop: asyncio.Event) -> None:
        await follow(js, Kind.CONTROL, trainer.on_control, stop)

    async def ranks(stop: asyncio.Event) -> None:
        """A DeepSpeed run's rank failed: stop serving, and exit to be started again as a whole
        (the batch in hand goes back to the stream; a collective missing a rank cannot go on)."""
        lost, stopping = asyncio.create_task(trainer.ranks_failed.wait()), asyncio.create_task(stop.wait())
        await asyncio.wait({lost, stopping}, return_when=asyncio.FIRST_COMPLETED)
        lost.cancel()
        stopping.cancel()
        if trainer.ranks_failed.is_set():
            os.kill(os.getpid(), signal.SIGTERM)  # serve()'s own graceful stop

    async def probe() -> str | None:
        return f"DeepSpeed ranks failed: {trainer.fatal}" if trainer.fatal else await on_bus()

    async def close() -> None:
        await asyncio.to_thread(trainer.close)
        await specs.close()
        await nc.drain()

    await serve(
        "svc_trainer",
        settings.listen_as(settings.trainer_addr),
        register(TrainerServicer(trainer)),
        [batches, control, ranks],
        on_stop=close,
        probe=probe,
        security=ServerSecurity.of(settings),
    )
    if trainer.fatal:
        raise SystemExit(f"svc_trainer: DeepSpeed ranks failed ({trainer.fatal}); exiting to be restarted")
