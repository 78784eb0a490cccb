"""RewardStage.score against real gRPC servers: deadline, retries with backoff, the failure path."""

import asyncio
import time

import grpc
import pytest

from jetrl.localstack import free_port
from jetrl.v1 import events_pb2, reward_pb2, reward_pb2_grpc
from svc_reward.server import register
from svc_reward.stage import RewardStage, RewardUnavailable, score_requests


class FakeReward(reward_pb2_grpc.RewardServiceServicer):
    """Answers after `delays[call]` seconds (0 once the list runs out), with `short` scores fewer than asked."""

    def __init__(self, delays=(), short=0):
        self.delays, self.short, self.calls = list(delays), short, 0

    async def Score(self, request, context):
        delay = self.delays[self.calls] if self.calls < len(self.delays) else 0.0
        self.calls += 1
        await asyncio.sleep(delay)
        samples = request.views[0].samples[self.short:]
        return reward_pb2.ScoreResponse(
            scores=[reward_pb2.SampleScore(sample_id=s.sample_id, reward=1.0) for s in samples], server="fake@0"
        )


async def start(add) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    add(server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    return server, f"127.0.0.1:{port}"


def group(reference: str = "7", *texts: str) -> events_pb2.PromptGroup:
    samples = [events_pb2.Sample(sample_id=f"g.{i}", text=t) for i, t in enumerate(texts or ("7", "8"))]
    return events_pb2.PromptGroup(run_id="r", group_id="g", prompt="3+4=", reference=reference, samples=samples)


async def score_with(fake: FakeReward, deadline: float, retries: int):
    server, addr = await start(lambda s: reward_pb2_grpc.add_RewardServiceServicer_to_server(fake, s))
    stage = RewardStage(js=None, specs=None, default_endpoint=addr)
    try:
        return await stage.score(addr, score_requests(group())[0][1], deadline=deadline, retries=retries)
    finally:
        await stage.close()
        await server.stop(None)


async def test_a_call_past_its_deadline_is_retried():
    fake = FakeReward(delays=[2.0])
    start_t = time.monotonic()
    reply = await score_with(fake, deadline=0.2, retries=2)
    assert (fake.calls, reply.server, len(reply.scores)) == (2, "fake@0", 2)
    assert time.monotonic() - start_t < 1.5  # 0.2 s deadline + 0.5 s backoff + the answer


async def test_a_server_that_stays_slow_fails_loudly():
    fake = FakeReward(delays=[2.0, 2.0])
    with pytest.raises(RewardUnavailable, match="DEADLINE_EXCEEDED"):
        await score_with(fake, deadline=0.2, retries=1)
    assert fake.calls == 2


async def test_a_reply_with_the_wrong_number_of_scores_is_refused():
    fake = FakeReward(short=1)
    with pytest.raises(RewardUnavailable, match="returned 1 scores for 2 samples"):
        await score_with(fake, deadline=1.0, retries=1)
    assert fake.calls == 2


async def test_stage_and_verify_server_together():
    server, addr = await start(register)
    stage = RewardStage(js=None, specs=None, default_endpoint=addr)
    try:
        reply = await stage.score(addr, score_requests(group("7", "7", "8", ""))[0][1], deadline=5, retries=0)
        assert [s.reward for s in reply.scores] == [1.0, 0.0, 0.0]
        # a request the server refuses is not retried: it would be refused again
        start_t = time.monotonic()
        with pytest.raises(RewardUnavailable, match="INVALID_ARGUMENT.*reference"):
            await stage.score(addr, score_requests(group(""))[0][1], deadline=5, retries=3)
        assert time.monotonic() - start_t < 0.4  # no backoff sleeps
    finally:
        await stage.close()
        await server.stop(None)
