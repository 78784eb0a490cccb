"""The label-free servers: `majority` started alone as its own process, `co_reward` in-process;
both over real gRPC."""

import os
import signal
import subprocess
import sys
from contextlib import asynccontextmanager

import grpc
import pytest

from jetrl.localstack import free_port
from jetrl.rpc import wait_serving
from jetrl.rpc_security import LOCAL
from jetrl.v1 import reward_pb2, reward_pb2_grpc


@pytest.fixture(scope="module")
async def stub():
    addr = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "svc_reward.majority"], env={**os.environ, "JETRL_LISTEN": addr})
    try:
        await wait_serving(addr, LOCAL, timeout=60, what="svc_reward.majority")
        async with grpc.aio.insecure_channel(addr) as ch:
            yield reward_pb2_grpc.RewardServiceStub(ch)
    finally:
        proc.send_signal(signal.SIGTERM)  # the process we started, by its pid
        assert proc.wait(timeout=30) == 0


@asynccontextmanager
async def in_process(servicer):
    """A stub on `servicer` served in this process on a free port."""
    server = grpc.aio.server()
    reward_pb2_grpc.add_RewardServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield reward_pb2_grpc.RewardServiceStub(ch)
    finally:
        await server.stop(None)


def request(*texts: str, **fields) -> reward_pb2.ScoreRequest:
    samples = [reward_pb2.RewardSample(sample_id=f"g.{i}", text=t) for i, t in enumerate(texts)]
    view = reward_pb2.RewardView(view="main", prompt="12+30=", samples=samples)
    return reward_pb2.ScoreRequest(
        **({"contract_version": 1, "run_id": "r", "group_id": "g", "views": [view]} | fields)
    )


async def test_describe_needs_no_reference(stub):
    d = await stub.Describe(reward_pb2.DescribeRequest(), timeout=5)
    assert (d.name, d.version, list(d.contract_versions), d.needs_reference) == ("majority", "1", [1], False)


async def test_scores_agreement_with_the_majority_without_a_reference(stub):
    reply = await stub.Score(request("42", "42.0", "41", ""), timeout=5)
    assert reply.server == "majority@1"
    assert [(s.sample_id, s.reward, s.extracted_answer, s.pseudo_label) for s in reply.scores] == [
        ("g.0", 1.0, "42", "42"),
        ("g.1", 1.0, "42", "42"),
        ("g.2", 0.0, "41", "42"),
        ("g.3", 0.0, "", "42"),
    ]
    assert reply.scores[3].detail == "no answer" and reply.scores[2].detail == "pseudo-label is 42"


@pytest.mark.parametrize(
    ("fields", "needle"), [({"contract_version": 9}, "contract_version 9"), ({"views": []}, "no views")]
)
async def test_bad_requests_say_what_to_send(stub, fields, needle):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Score(request("1", **fields), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in err.value.details()


async def test_co_reward_scores_the_main_view_against_the_other_view():
    from svc_reward.co_reward import SERVICER

    async with in_process(SERVICER) as stub:
        assert (await stub.Describe(reward_pb2.DescribeRequest(), timeout=5)).needs_views
        main = request("42", "42", "41").views[0]
        other = reward_pb2.RewardView(
            view="rephrased",
            prompt="30+12=",
            samples=[reward_pb2.RewardSample(sample_id=f"h.{i}", text=t) for i, t in enumerate(["41", "41", "42"])],
        )
        reply = await stub.Score(request(views=[main, other]), timeout=5)
        # the main view's own majority is 42, but it is scored against the other view's: 41
        assert [(s.reward, s.pseudo_label) for s in reply.scores] == [(0.0, "41"), (0.0, "41"), (1.0, "41")]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Score(request("1"), timeout=5)
        assert "views[1]" in err.value.details()
        teacher = reward_pb2.RewardView(view="teacher", samples=[reward_pb2.RewardSample(sample_id="g.9", text="4")])
        with pytest.raises(grpc.aio.AioRpcError) as err:  # teacher samples are not the analogous view
            await stub.Score(request("4", views=[request("4").views[0], teacher]), timeout=5)
        assert "analogous_view" in err.value.details()


def view(name: str, *texts: str, first: int = 4) -> reward_pb2.RewardView:
    return reward_pb2.RewardView(
        view=name,
        prompt="12+30=",
        samples=[reward_pb2.RewardSample(sample_id=f"g.{first + i}", text=t) for i, t in enumerate(texts)],
    )


async def test_teacher_scores_against_the_teachers_majority_and_refuses_without_its_samples():
    from svc_reward.teacher import SERVICER

    async with in_process(SERVICER) as stub:
        d = await stub.Describe(reward_pb2.DescribeRequest(), timeout=5)
        assert (d.name, d.needs_teacher_samples, d.needs_views) == ("teacher", True, False)
        # teacher: 41 twice, 42 once, one empty answer (which never wins) -> the label is 41
        reply = await stub.Score(
            request(views=[view("main", "42", "42", "41", "", first=0), view("teacher", "41", "", "42", "41")]),
            timeout=5,
        )
        assert [(s.reward, s.pseudo_label) for s in reply.scores] == [
            (0.0, "41"),
            (0.0, "41"),
            (1.0, "41"),
            (0.0, "41"),
        ]
        # a tie among the teacher's answers goes to the smallest: 7 over 9
        reply = await stub.Score(request(views=[view("main", "7", "9", first=0), view("teacher", "9", "7")]), timeout=5)
        assert [s.reward for s in reply.scores] == [1.0, 0.0]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Score(request("1"), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "teacher:" in err.value.details()
