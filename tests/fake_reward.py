"""A scriptable reward server for the reward stage's tests, unit and integration: `FakeReward`
answers late or short as told, `start` serves a servicer in this process on a free port."""

from __future__ import annotations

import asyncio

import grpc

from jetrl.localstack import free_port
from jetrl.v1 import reward_pb2, reward_pb2_grpc


class FakeReward(reward_pb2_grpc.RewardServiceServicer):
    """Answers after `delays[call]` seconds (0 once the list runs out), with `short` scores fewer than
    asked; `reply(samples)` makes the scores instead (each sample's reward its index, named by its id)."""

    def __init__(self, delays=(), short=0, reply=None):
        self.delays, self.short, self.calls = list(delays), short, 0
        self.reply = reply or (
            lambda samples: [reward_pb2.SampleScore(sample_id=s.sample_id, reward=1.0) for s in samples]
        )

    async def Score(self, request, context):
        delay = self.delays[self.calls] if self.calls < len(self.delays) else 0.0
        self.calls += 1
        await asyncio.sleep(delay)
        return reward_pb2.ScoreResponse(scores=self.reply(request.views[0].samples[self.short :]), server="fake@0")


async def start(add) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    add(server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    return server, f"127.0.0.1:{port}"
