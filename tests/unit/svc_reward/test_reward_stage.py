"""RewardStage.score against real gRPC servers: deadline, retries with backoff, the failure path,
scores matched by sample id, rewards that are not finite or beyond the run's bound (scored groups
published on a real nats-server: tests/integration/svc_reward/test_reward_stage_bus.py)."""

import asyncio
import logging
import math
import time

import grpc
import pytest

from fake_reward import FakeReward, start
from jetrl.spec_sections import RewardSpec
from jetrl.v1 import events_pb2, reward_pb2, reward_pb2_grpc
from svc_reward.server import Refused, VerifyServicer, reward_register
from svc_reward.stage import RewardStage, RewardUnavailable, score_requests


def group(reference: str = "7", *texts: str) -> events_pb2.PromptGroup:
    samples = [events_pb2.Sample(sample_id=f"g.{i}", text=t) for i, t in enumerate(texts or ("7", "8"))]
    return events_pb2.PromptGroup(run_id="r", group_id="g", prompt="3+4=", reference=reference, samples=samples)


async def score_with(fake: FakeReward, deadline: float, retries: int, texts=("7", "8"), **spec):
    server, addr = await start(lambda s: reward_pb2_grpc.add_RewardServiceServicer_to_server(fake, s))
    stage = RewardStage(js=None, specs=None, default_endpoint=addr)
    try:
        return await stage.score(
            addr, score_requests(group("7", *texts))[0][1], RewardSpec(deadline_s=deadline, retries=retries, **spec)
        )
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
    with pytest.raises(RewardUnavailable, match=r"bad reply: no score for 1 of 2 samples: 'g.0'"):
        await score_with(fake, deadline=1.0, retries=1)
    assert fake.calls == 2


def indexed(samples, ids=None):
    """Each sample's reward is its index in the group (`g.<i>`), named by `ids` (default: its own id)."""
    ids = [s.sample_id for s in samples] if ids is None else ids
    return [reward_pb2.SampleScore(sample_id=i, reward=float(s.sample_id.split(".")[1])) for s, i in zip(samples, ids)]


async def test_scores_in_another_order_are_matched_to_their_samples_by_id():
    fake = FakeReward(reply=lambda samples: indexed(samples)[::-1])
    reply = await score_with(fake, deadline=1.0, retries=0, texts=("a", "b", "c", "d"))
    assert [(s.sample_id, s.reward) for s in reply.scores] == [("g.0", 0.0), ("g.1", 1.0), ("g.2", 2.0), ("g.3", 3.0)]


async def test_a_server_that_names_no_sample_is_matched_by_position_and_logged_once(caplog):
    fake = FakeReward(reply=lambda samples: indexed(samples, [""] * len(samples)))
    server, addr = await start(lambda s: reward_pb2_grpc.add_RewardServiceServicer_to_server(fake, s))
    stage = RewardStage(js=None, specs=None, default_endpoint=addr)
    try:
        with caplog.at_level(logging.WARNING, logger="svc_reward.stage"):
            for _ in range(2):
                reply = await stage.score(addr, score_requests(group("7", "a", "b", "c"))[0][1], RewardSpec())
                assert [s.reward for s in reply.scores] == [0.0, 1.0, 2.0]
        assert sum("matched by position" in r.message for r in caplog.records) == 1
    finally:
        await stage.close()
        await server.stop(None)


@pytest.mark.parametrize(
    ("ids", "error"),
    [
        (["g.0", "", "g.2"], "1 of 3 scores name no sample_id"),
        (["g.0", "g.0", "g.2"], "more than one score for sample 'g.0'"),
        (["g.0", "g.1", "g.9"], "scores for samples not in the request: 'g.9'"),
        (["g.2", "g.1"], "no score for 1 of 3 samples: 'g.0'"),
        (["", ""], "2 scores for 3 samples: one each"),
    ],
)
async def test_a_reply_with_unknown_missing_or_duplicate_ids_is_a_failed_call(ids, error):
    fake = FakeReward(reply=lambda samples: indexed(samples, ids))
    with pytest.raises(RewardUnavailable, match=f"^bad reply: {error}"):
        await score_with(fake, deadline=1.0, retries=0, texts=("a", "b", "c"))


@pytest.mark.parametrize(
    ("reward", "error"),
    [
        (math.nan, "reward nan for sample 'g.1': every reward must be a finite number"),
        (-math.inf, "reward -inf for sample 'g.1': every reward must be a finite number"),
        (1e30, r"reward 1e\+30 for sample 'g.1' is beyond the run's bound \(reward.max_abs_reward: 100\)"),
        (-100.5, r"reward -100.5 for sample 'g.1' is beyond"),
    ],
)
async def test_a_reward_that_is_not_finite_or_beyond_the_bound_is_a_failed_call(reward, error):
    def reply(samples):
        scores = indexed(samples)
        scores[1].reward = reward
        return scores

    fake = FakeReward(reply=reply)
    with pytest.raises(RewardUnavailable, match=f"^bad reply: {error}"):
        await score_with(fake, deadline=1.0, retries=1)
    assert fake.calls == 2  # retried like any failed call


async def test_the_bound_is_the_runs_option():
    fake = FakeReward(
        reply=lambda samples: [reward_pb2.SampleScore(sample_id=s.sample_id, reward=-250.0) for s in samples]
    )
    reply = await score_with(fake, deadline=1.0, retries=0, max_abs_reward=250.0)
    assert [s.reward for s in reply.scores] == [-250.0, -250.0]


async def test_stage_and_verify_server_together():
    server, addr = await start(reward_register(VerifyServicer()))
    stage = RewardStage(js=None, specs=None, default_endpoint=addr)
    try:
        reply = await stage.score(
            addr, score_requests(group("7", "7", "8", ""))[0][1], RewardSpec(deadline_s=5, retries=0)
        )
        assert [s.reward for s in reply.scores] == [1.0, 0.0, 0.0]
        # a request the server refuses is not retried: it would be refused again
        start_t = time.monotonic()
        with pytest.raises(RewardUnavailable, match="INVALID_ARGUMENT.*reference"):
            await stage.score(addr, score_requests(group(""))[0][1], RewardSpec(deadline_s=5, retries=3))
        assert time.monotonic() - start_t < 0.4  # no backoff sleeps
    finally:
        await stage.close()
        await server.stop(None)


NOWHERE = "127.0.0.1:1"  # nothing listens there: a call that went over gRPC would fail


async def test_the_built_in_server_of_this_process_is_called_in_process_with_the_same_reply():
    verify = VerifyServicer()
    server, addr = await start(reward_register(verify))
    remote = RewardStage(js=None, specs=None, default_endpoint=addr)
    local = RewardStage(js=None, specs=None, default_endpoint=NOWHERE, local={NOWHERE: verify})
    request = score_requests(group("7", "7", "8", "", "7 apples"))[0][1]
    try:
        over_grpc = await remote.score(addr, request, RewardSpec(deadline_s=5, retries=0))
        in_process = await local.score(NOWHERE, request, RewardSpec(deadline_s=5, retries=0))
        assert in_process == over_grpc
        assert [s.reward for s in in_process.scores] == [1.0, 0.0, 0.0, 1.0]
        # refused alike, and not retried: the same request would be refused again
        for stage, endpoint in ((remote, addr), (local, NOWHERE)):
            start_t = time.monotonic()
            with pytest.raises(RewardUnavailable, match="^INVALID_ARGUMENT: verify needs a reference answer") as info:
                await stage.score(endpoint, score_requests(group(""))[0][1], RewardSpec(deadline_s=5, retries=3))
            assert info.value.attempts == 1 and time.monotonic() - start_t < 0.4
    finally:
        await remote.close()
        await server.stop(None)


class LocalFake:
    """A server in the process that is slow, then unavailable, then answers (as told by `script`)."""

    def __init__(self, *script: str):
        self.script, self.calls = list(script), 0

    async def score(self, request: reward_pb2.ScoreRequest) -> reward_pb2.ScoreResponse:
        step = self.script[self.calls] if self.calls < len(self.script) else "answer"
        self.calls += 1
        if step == "slow":
            await asyncio.sleep(5)
        if step == "unavailable":
            raise Refused(grpc.StatusCode.UNAVAILABLE, "a worker was restarted; retry the call")
        samples = request.views[0].samples
        return reward_pb2.ScoreResponse(scores=indexed(samples), server="local@0")


async def test_an_in_process_call_has_the_deadline_and_retries_of_a_remote_one():
    fake = LocalFake("slow", "unavailable")
    stage = RewardStage(js=None, specs=None, default_endpoint=NOWHERE, local={NOWHERE: fake})
    start_t = time.monotonic()
    reply = await stage.score(
        NOWHERE, score_requests(group("7", "a", "b"))[0][1], RewardSpec(deadline_s=0.2, retries=2)
    )
    assert (fake.calls, reply.server, [s.reward for s in reply.scores]) == (3, "local@0", [0.0, 1.0])
    assert time.monotonic() - start_t < 2.5  # 0.2 s deadline + 0.5 s and 1 s of backoff
    slow = RewardStage(js=None, specs=None, default_endpoint=NOWHERE, local={NOWHERE: LocalFake("slow")})
    with pytest.raises(RewardUnavailable, match="^DEADLINE_EXCEEDED") as info:
        await slow.score(NOWHERE, score_requests(group("7", "a"))[0][1], RewardSpec(deadline_s=0.2, retries=0))
    assert info.value.attempts == 1
