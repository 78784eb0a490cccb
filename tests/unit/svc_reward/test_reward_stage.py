"""RewardStage.score against real gRPC servers: deadline, retries with backoff, the failure path,
scores matched by sample id, rewards that are not finite or beyond the run's bound."""

import asyncio
import logging
import math
import time

import grpc
import pytest

from jetrl.config import RewardSpec
from jetrl.localstack import free_port
from jetrl.v1 import events_pb2, reward_pb2, reward_pb2_grpc
from svc_reward.server import register
from svc_reward.stage import RewardStage, RewardUnavailable, score_requests


class FakeReward(reward_pb2_grpc.RewardServiceServicer):
    """Answers after `delays[call]` seconds (0 once the list runs out), with `short` scores fewer than
    asked; `reply(samples)` makes the scores instead (each sample's reward its index, named by its id)."""

    def __init__(self, delays=(), short=0, reply=None):
        self.delays, self.short, self.calls = list(delays), short, 0
        self.reply = reply or (lambda samples: [reward_pb2.SampleScore(sample_id=s.sample_id, reward=1.0)
                                                for s in samples])

    async def Score(self, request, context):
        delay = self.delays[self.calls] if self.calls < len(self.delays) else 0.0
        self.calls += 1
        await asyncio.sleep(delay)
        return reward_pb2.ScoreResponse(scores=self.reply(request.views[0].samples[self.short:]), server="fake@0")


async def start(add) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    add(server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    return server, f"127.0.0.1:{port}"


def group(reference: str = "7", *texts: str) -> events_pb2.PromptGroup:
    samples = [events_pb2.Sample(sample_id=f"g.{i}", text=t) for i, t in enumerate(texts or ("7", "8"))]
    return events_pb2.PromptGroup(run_id="r", group_id="g", prompt="3+4=", reference=reference, samples=samples)


async def score_with(fake: FakeReward, deadline: float, retries: int, texts=("7", "8"), **spec):
    server, addr = await start(lambda s: reward_pb2_grpc.add_RewardServiceServicer_to_server(fake, s))
    stage = RewardStage(js=None, specs=None, default_endpoint=addr)
    try:
        return await stage.score(addr, score_requests(group("7", *texts))[0][1],
                                 RewardSpec(deadline_s=deadline, retries=retries, **spec))
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
    return [reward_pb2.SampleScore(sample_id=i, reward=float(s.sample_id.split(".")[1]))
            for s, i in zip(samples, ids)]


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


@pytest.mark.parametrize(("ids", "error"), [
    (["g.0", "", "g.2"], "1 of 3 scores name no sample_id"),
    (["g.0", "g.0", "g.2"], "more than one score for sample 'g.0'"),
    (["g.0", "g.1", "g.9"], "scores for samples not in the request: 'g.9'"),
    (["g.2", "g.1"], "no score for 1 of 3 samples: 'g.0'"),
    (["", ""], "2 scores for 3 samples: one each"),
])
async def test_a_reply_with_unknown_missing_or_duplicate_ids_is_a_failed_call(ids, error):
    fake = FakeReward(reply=lambda samples: indexed(samples, ids))
    with pytest.raises(RewardUnavailable, match=f"^bad reply: {error}"):
        await score_with(fake, deadline=1.0, retries=0, texts=("a", "b", "c"))


@pytest.mark.parametrize(("reward", "error"), [
    (math.nan, "reward nan for sample 'g.1': every reward must be a finite number"),
    (-math.inf, "reward -inf for sample 'g.1': every reward must be a finite number"),
    (1e30, r"reward 1e\+30 for sample 'g.1' is beyond the run's bound \(reward.max_abs_reward: 100\)"),
    (-100.5, r"reward -100.5 for sample 'g.1' is beyond"),
])
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
    fake = FakeReward(reply=lambda samples: [reward_pb2.SampleScore(sample_id=s.sample_id, reward=-250.0)
                                             for s in samples])
    reply = await score_with(fake, deadline=1.0, retries=0, max_abs_reward=250.0)
    assert [s.reward for s in reply.scores] == [-250.0, -250.0]


async def test_stage_and_verify_server_together():
    server, addr = await start(register)
    stage = RewardStage(js=None, specs=None, default_endpoint=addr)
    try:
        reply = await stage.score(addr, score_requests(group("7", "7", "8", ""))[0][1], RewardSpec(deadline_s=5, retries=0))
        assert [s.reward for s in reply.scores] == [1.0, 0.0, 0.0]
        # a request the server refuses is not retried: it would be refused again
        start_t = time.monotonic()
        with pytest.raises(RewardUnavailable, match="INVALID_ARGUMENT.*reference"):
            await stage.score(addr, score_requests(group(""))[0][1], RewardSpec(deadline_s=5, retries=3))
        assert time.monotonic() - start_t < 0.4  # no backoff sleeps
    finally:
        await stage.close()
        await server.stop(None)


class Specs:
    """RunSpecs stand-in: every run has this spec."""

    def __init__(self, spec):
        self.spec = spec

    async def get(self, run_id):
        return self.spec


class Echo(reward_pb2_grpc.RewardServiceServicer):
    """Rewards each sample of views[0] with its number; records the view order of every request."""

    def __init__(self, name):
        self.name, self.seen = name, []

    async def Score(self, request, context):
        self.seen.append([v.view for v in request.views])
        return reward_pb2.ScoreResponse(server=f"{self.name}@1", scores=[
            reward_pb2.SampleScore(sample_id=s.sample_id, reward=float(s.text), extracted_answer=s.text)
            for s in request.views[0].samples])


def viewed_group() -> events_pb2.PromptGroup:
    texts = ["1", "2", "3", "4", "9", "9"]  # main 0-1, analogous 2-3, teacher 4-5
    samples = [events_pb2.Sample(run_id="r", group_id="r.g0", sample_id=f"r.g0.{i}", index=i, text=t,
                                 completion_token_ids=[5], logprobs=[-0.1], token_versions=[0])
               for i, t in enumerate(texts)]
    return events_pb2.PromptGroup(run_id="r", group_id="r.g0", prompt="1+2=", reference="3", samples=samples, views=[
        events_pb2.ViewPrompt(view="main", prompt="1+2=", first_index=0, size=2, trained=True),
        events_pb2.ViewPrompt(view="analogous", prompt="2+1=", first_index=2, size=2, trained=True),
        events_pb2.ViewPrompt(view="teacher", prompt="1+2=", first_index=4, size=2, trained=False)])


async def scored_after(js, stage, group) -> events_pb2.ScoredGroup:
    from jetrl.bus import Kind, subject

    await stage.on_group(group, None)
    msg = await js.get_last_msg("JETRL_SCORED", subject(group.run_id, Kind.SCORED))
    return events_pb2.ScoredGroup.FromString(msg.data)


async def test_every_endpoint_scores_every_trained_view_and_rewards_add_up_by_weight(js):
    from jetrl.config import parse_spec

    a, b = Echo("a"), Echo("b")
    sa, addr_a = await start(lambda s: reward_pb2_grpc.add_RewardServiceServicer_to_server(a, s))
    sb, addr_b = await start(lambda s: reward_pb2_grpc.add_RewardServiceServicer_to_server(b, s))
    spec = parse_spec(f"model: {{path: /m}}\nreward: {{endpoints: [{{address: '{addr_a}'}}, "
                      f"{{address: '{addr_b}', weight: -0.5}}]}}")
    stage = RewardStage(js, Specs(spec), default_endpoint="unused:1")
    try:
        scored = await scored_after(js, stage, viewed_group())
        # each trained view first in its own request, the other trained view next, the teacher's last
        assert sorted(a.seen) == [["analogous", "main", "teacher"], ["main", "analogous", "teacher"]]
        # 1 * x - 0.5 * x for the trained samples; the teacher's are context: 0
        assert list(scored.rewards) == [0.5, 1.0, 1.5, 2.0, 0.0, 0.0]
        assert [(c.endpoint, c.server, c.weight, c.ok, list(c.rewards)) for c in scored.calls] == [
            (addr_a, "a@1", 1.0, True, [1.0, 2.0, 3.0, 4.0, 0.0, 0.0]),
            (addr_b, "b@1", -0.5, True, [1.0, 2.0, 3.0, 4.0, 0.0, 0.0])]
        assert scored.reward_server == "a@1" and scored.details[2].extracted_answer == "3"
    finally:
        await stage.close()
        await sa.stop(None)
        await sb.stop(None)


async def test_a_dead_endpoint_is_a_failed_call_within_its_retries_not_a_stall(js):
    from jetrl.config import parse_spec

    a = Echo("a")
    sa, addr_a = await start(lambda s: reward_pb2_grpc.add_RewardServiceServicer_to_server(a, s))
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    spec = parse_spec(f"model: {{path: /m}}\nreward: {{endpoints: [{{address: '{dead}'}}, {{address: '{addr_a}'}}], "
                      "deadline_s: 0.5, retries: 1}")
    stage = RewardStage(js, Specs(spec), default_endpoint="unused:1")
    try:
        t0 = time.monotonic()
        scored = await scored_after(js, stage, viewed_group())
        assert time.monotonic() - t0 < 3.0  # two attempts of at most 0.5 s, 0.5 s of backoff
        failed, ok = scored.calls
        assert (failed.ok, failed.attempts, ok.ok) == (False, 2, True) and "UNAVAILABLE" in failed.error
        assert list(failed.rewards) == [0.0] * 6
        assert list(scored.rewards) == [1.0, 2.0, 3.0, 4.0, 0.0, 0.0]  # the dead one's share counts 0
        assert scored.reward_server == "a@1"  # details come from the endpoint that answered
    finally:
        await stage.close()
        await sa.stop(None)


async def test_a_nan_reward_is_published_as_a_failed_call_never_as_a_reward(js):
    from jetrl.config import parse_spec

    fake = FakeReward(reply=lambda samples: [reward_pb2.SampleScore(sample_id=s.sample_id, reward=math.nan)
                                             for s in samples])
    sf, addr = await start(lambda s: reward_pb2_grpc.add_RewardServiceServicer_to_server(fake, s))
    spec = parse_spec(f"model: {{path: /m}}\nreward: {{endpoint: '{addr}', retries: 0}}")
    stage = RewardStage(js, Specs(spec), default_endpoint="unused:1")
    try:
        scored = await scored_after(js, stage, viewed_group())  # published: it passed the event's validation
        (call,) = scored.calls
        assert not call.ok and "every reward must be a finite number" in call.error
        assert list(scored.rewards) == [0.0] * 6 and list(call.rewards) == [0.0] * 6
    finally:
        await stage.close()
        await sf.stop(None)
