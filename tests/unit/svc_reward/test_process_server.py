"""The `process` reward server over real gRPC: in-process with the default options, and started
alone as its own process with options from the environment."""

import os
import signal
import subprocess
import sys

import grpc
import pytest
from pydantic import ValidationError

from jetrl.localstack import free_port
from jetrl.rpc import wait_serving
from jetrl.rpc_security import LOCAL
from jetrl.v1 import reward_pb2, reward_pb2_grpc
from svc_reward.process import ProcessOptions, ProcessServicer

GSM8K_REFERENCE = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"


@pytest.fixture(scope="module")
async def stub():
    server = grpc.aio.server()
    reward_pb2_grpc.add_RewardServiceServicer_to_server(ProcessServicer(ProcessOptions()), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield reward_pb2_grpc.RewardServiceStub(ch)
    await server.stop(None)


def request(reference: str, *texts: str, **fields) -> reward_pb2.ScoreRequest:
    samples = [reward_pb2.RewardSample(sample_id=f"g.{i}", text=t) for i, t in enumerate(texts)]
    view = reward_pb2.RewardView(view="main", prompt="12+7-5=", samples=samples)
    fields = {"contract_version": 1, "views": [view]} | fields
    return reward_pb2.ScoreRequest(run_id="r", group_id="g", reference=reference, **fields)


async def test_describe_needs_a_reference(stub):
    d = await stub.Describe(reward_pb2.DescribeRequest(), timeout=5)
    assert (d.name, d.version, list(d.contract_versions), d.needs_reference) == ("process", "1", [1], True)
    assert not d.needs_views and not d.needs_teacher_samples


async def test_outcome_plus_clipped_steps_for_every_sample_in_order(stub):
    texts = ["12+7=19\n19-5=14", "12+7=20\n20-5=15", "12+7=20\n20-5=14", "14", "", "12+7=19\n" * 5 + "14"]
    reply = await stub.Score(request("14", *texts), timeout=5)
    assert reply.server == "process@1"
    assert [s.sample_id for s in reply.scores] == [f"g.{i}" for i in range(6)]
    assert [list(s.step_scores) for s in reply.scores] == [[1, 1], [0, 1], [0, 0], [], [], [1] * 5]
    # outcome + sum min(s_k - 0.5, 0): a wrong step costs 0.5, repeating a correct one earns nothing
    assert [s.reward for s in reply.scores] == [1.0, -0.5, 0.0, 1.0, 0.0, 1.0]
    assert [s.extracted_answer for s in reply.scores] == ["14", "15", "14", "14", "", "14"]
    assert reply.scores[1].detail == "outcome 0 (15 is not the reference 14), 2 steps, 1 wrong, clip -0.5"
    assert reply.scores[4].detail == "outcome 0 (no answer), 0 steps, 0 wrong, clip +0"


async def test_gsm8k_reference_and_boxed_answers(stub):
    reply = await stub.Score(
        request(GSM8K_REFERENCE, "48/2 = <<48/2=24>>24\n48+24 = 72\n#### 72", r"48+24 = 72, so \boxed{72}"), timeout=5
    )
    assert [(list(s.step_scores), s.reward) for s in reply.scores] == [([1, 1], 1.0), ([1], 0.0)]
    assert "use verify" in reply.scores[1].detail


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"reference": ""}, "needs a reference answer"),
        ({"reference": "#### none"}, "bad reference"),
        ({"reference": r"\frac{\sqrt{2}}{2}"}, "use verify"),  # a fraction of numbers is a number
        ({"contract_version": 9}, "contract_version 9"),
        ({"views": []}, "no views"),
    ],
)
async def test_bad_requests_say_what_to_send(stub, fields, needle):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Score(request(**({"reference": "14"} | fields)), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in err.value.details()


def test_options_come_from_the_environment_and_are_bounded(monkeypatch):
    monkeypatch.setenv("JETRL_PROCESS_SHAPING", "delta")
    monkeypatch.setenv("JETRL_PROCESS_STEP_WEIGHT", "0.5")
    assert ProcessOptions().model_dump() == {"shaping": "delta", "threshold": 0.5, "step_weight": 0.5}
    for bad in ({"threshold": 1.5}, {"step_weight": -1}, {"shaping": "sum"}):
        with pytest.raises(ValidationError):
            ProcessOptions(**bad)
    assert all(f.description for f in ProcessOptions.model_fields.values())


@pytest.fixture
def alone():
    """`python -m svc_reward.process` as its own process, with Delta shaping and weight 2 from the environment."""
    addr = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "JETRL_LISTEN": addr, "JETRL_PROCESS_SHAPING": "delta", "JETRL_PROCESS_STEP_WEIGHT": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "svc_reward.process"], env=env)
    yield addr
    proc.send_signal(signal.SIGTERM)  # the process we started, by its pid
    assert proc.wait(timeout=30) == 0


async def test_started_alone_with_delta_shaping(alone):
    await wait_serving(alone, LOCAL, timeout=60, what="svc_reward.process")
    async with grpc.aio.insecure_channel(alone) as ch:
        reply = await reward_pb2_grpc.RewardServiceStub(ch).Score(
            request("14", "12+7=19\n19-5=14", "2+2=4\n" * 50 + "15", "12+7=20\n20-5=15"), timeout=5
        )
    # outcome + 2 * s_1: fifty correct steps are worth what one is
    assert [s.reward for s in reply.scores] == [3.0, 2.0, 0.0]
    assert reply.scores[1].detail.endswith("50 steps, 0 wrong, delta +2")
