"""RewardStage.on_group on a real nats-server: every endpoint scores every trained view and the
scored group is published, with a dead endpoint or a NaN reward recorded as a failed call."""

import math
import time

from fake_reward import FakeReward, start
from jetrl.localstack import free_port
from jetrl.v1 import events_pb2, reward_pb2, reward_pb2_grpc
from svc_reward.stage import RewardStage


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
        return reward_pb2.ScoreResponse(
            server=f"{self.name}@1",
            scores=[
                reward_pb2.SampleScore(sample_id=s.sample_id, reward=float(s.text), extracted_answer=s.text)
                for s in request.views[0].samples
            ],
        )


def viewed_group() -> events_pb2.PromptGroup:
    texts = ["1", "2", "3", "4", "9", "9"]  # main 0-1, analogous 2-3, teacher 4-5
    samples = [
        events_pb2.Sample(
            run_id="r",
            group_id="r.g0",
            sample_id=f"r.g0.{i}",
            index=i,
            text=t,
            completion_token_ids=[5],
            logprobs=[-0.1],
            token_versions=[0],
        )
        for i, t in enumerate(texts)
    ]
    return events_pb2.PromptGroup(
        run_id="r",
        group_id="r.g0",
        prompt="1+2=",
        reference="3",
        samples=samples,
        views=[
            events_pb2.ViewPrompt(view="main", prompt="1+2=", first_index=0, size=2, trained=True),
            events_pb2.ViewPrompt(view="analogous", prompt="2+1=", first_index=2, size=2, trained=True),
            events_pb2.ViewPrompt(view="teacher", prompt="1+2=", first_index=4, size=2, trained=False),
        ],
    )


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
    spec = parse_spec(
        f"model: {{path: /m}}\nreward: {{endpoints: [{{address: '{addr_a}'}}, {{address: '{addr_b}', weight: -0.5}}]}}"
    )
    stage = RewardStage(js, Specs(spec), default_endpoint="unused:1")
    try:
        scored = await scored_after(js, stage, viewed_group())
        # each trained view first in its own request, the other trained view next, the teacher's last
        assert sorted(a.seen) == [["analogous", "main", "teacher"], ["main", "analogous", "teacher"]]
        # 1 * x - 0.5 * x for the trained samples; the teacher's are context: 0
        assert list(scored.rewards) == [0.5, 1.0, 1.5, 2.0, 0.0, 0.0]
        assert [(c.endpoint, c.server, c.weight, c.ok, list(c.rewards)) for c in scored.calls] == [
            (addr_a, "a@1", 1.0, True, [1.0, 2.0, 3.0, 4.0, 0.0, 0.0]),
            (addr_b, "b@1", -0.5, True, [1.0, 2.0, 3.0, 4.0, 0.0, 0.0]),
        ]
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
    spec = parse_spec(
        f"model: {{path: /m}}\nreward: {{endpoints: [{{address: '{dead}'}}, {{address: '{addr_a}'}}], "
        "deadline_s: 0.5, retries: 1}"
    )
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

    fake = FakeReward(
        reply=lambda samples: [reward_pb2.SampleScore(sample_id=s.sample_id, reward=math.nan) for s in samples]
    )
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
