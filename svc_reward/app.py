"""Wiring of the reward process: the built-in `verify` server and the reward stage."""

from __future__ import annotations

import asyncio

from jetrl.bus import bus_probe, connect, consume, declare
from jetrl.bus.topology import REWARD_STAGE
from jetrl.config import Settings
from jetrl.rpc_security import ClientCredentials, ServerSecurity
from jetrl.runs import RunSpecs
from jetrl.service import serve
from svc_reward.server import VerifyServicer, reward_register
from svc_reward.stage import RewardStage


async def main(settings: Settings) -> None:
    nc = await connect(settings, "svc_reward")
    js = nc.jetstream()
    await declare(js, replicas=settings.stream_replicas)
    specs = RunSpecs(settings.scheduler_addr, ClientCredentials.of(settings))
    verify = VerifyServicer()
    stage = RewardStage(
        js,
        specs,
        settings.reward_addr,
        credentials=ClientCredentials.of(settings, reward=True),
        local={settings.reward_addr: verify},
    )

    async def groups(stop: asyncio.Event) -> None:
        await consume(js, REWARD_STAGE, stage.on_group, stop, concurrency=settings.reward_concurrency)

    async def close() -> None:
        await stage.close()
        await specs.close()
        await nc.drain()

    # the built-in verify server is a reward server: it checks the reward token, not the stack's
    await serve(
        "svc_reward",
        settings.listen_as(settings.reward_addr),
        reward_register(verify),
        [groups],
        on_stop=close,
        probe=bus_probe(nc),
        security=ServerSecurity.of(settings, reward=True),
    )
