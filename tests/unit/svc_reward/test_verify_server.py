"""The verify reward server over real gRPC: contract, validation, math-verify isolation, health."""

import asyncio
import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jetrl.localstack import free_port
from jetrl.rpc import is_serving
from jetrl.rpc_security import LOCAL, ServerSecurity
from jetrl.service import serve
from jetrl.v1 import reward_pb2, reward_pb2_grpc
from svc_reward.server import HANG_S, MathPool, VerifyServicer, reward_register

TOWER = r"\boxed{9^{9^{9^{9}}}}"  # sympy would evaluate this for ever; math-verify's alarm stops it


def request(reference: str, *texts: str, **fields) -> reward_pb2.ScoreRequest:
    samples = [reward_pb2.RewardSample(sample_id=f"g.{i}", text=t) for i, t in enumerate(texts)]
    main = reward_pb2.RewardView(view="main", prompt="p", samples=samples)
    fields = {"contract_version": 1, "views": [main]} | fields
    return reward_pb2.ScoreRequest(run_id="r", group_id="g", reference=reference, **fields)


@pytest.fixture(scope="module")
async def stub():
    server = grpc.aio.server()
    assert reward_register(VerifyServicer())(server) == ["jetrl.v1.RewardService"]
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield reward_pb2_grpc.RewardServiceStub(ch)
    await server.stop(None)


async def test_describe(stub):
    d = await stub.Describe(reward_pb2.DescribeRequest(), timeout=5)
    assert (d.name, d.version, list(d.contract_versions), d.needs_reference) == ("verify", "1", [1], True)
    assert not d.needs_views and not d.needs_teacher_samples


async def test_scores_every_main_view_sample_in_order(stub):
    reply = await stub.Score(request("82", "82", "83", "", "82 apples"), timeout=5)
    assert reply.server == "verify@1"
    assert [s.sample_id for s in reply.scores] == ["g.0", "g.1", "g.2", "g.3"]
    assert [s.reward for s in reply.scores] == [1.0, 0.0, 0.0, 1.0]
    assert [s.extracted_answer for s in reply.scores] == ["82", "83", "", "82"]
    assert reply.scores[2].detail == "no answer"


async def test_latex_in_worker_processes_and_hostile_input_returns(stub):
    start = time.monotonic()
    reply = await stub.Score(request("0.5", r"\boxed{\frac{1}{2}}", TOWER, "0.5", r"\boxed{2}"), timeout=30)
    assert [s.reward for s in reply.scores] == [1.0, 0.0, 1.0, 0.0]
    assert reply.scores[0].extracted_answer == r"\frac{1}{2}"
    assert time.monotonic() - start < 15  # the alarm stops the tower after 1 s; the rest is starting workers


@pytest.mark.parametrize(
    "bad, says",
    [
        (request("7", "7", contract_version=2), "contract_version 2"),
        (request("7", "7", contract_version=0), "contract_version 0"),
        (request("7", views=[]), "views[0]"),
        (request(" ", "7"), "reference"),
        (request("so\n#### none", "7"), "bad reference"),
    ],
)
async def test_refuses_what_it_cannot_score(stub, bad, says):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Score(bad, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in err.value.details()


async def test_a_stuck_worker_is_killed_and_replaced():
    pool = MathPool(workers=1)
    assert (await pool.score("0.5", r"\boxed{0.5}")).reward == 1.0  # starts the worker
    pool.hang_s = 0.5  # below the 1 s alarm: the tower now looks stuck
    hung = await pool.score("0.5", TOWER)
    assert hung.reward == 0.0 and "worker restarted" in hung.detail
    # a caller that gives up first (its deadline) does not leave a stuck worker holding the only slot
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pool.score("0.5", TOWER), 0.1)
    pool.hang_s = HANG_S
    fresh = await asyncio.wait_for(pool.score("0.5", r"\boxed{\frac{1}{2}}"), 10)
    assert fresh.reward == 1.0


async def test_health_through_jetrl_service():
    addr = f"127.0.0.1:{free_port()}"
    ready, done = asyncio.Event(), asyncio.Event()

    async def until_done(stop: asyncio.Event) -> None:  # stands in for SIGTERM
        await done.wait()
        stop.set()

    task = asyncio.create_task(
        serve(
            "svc_reward", addr, reward_register(VerifyServicer()), [until_done], ready=ready, security=ServerSecurity()
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 10)
        assert await is_serving(addr, LOCAL)
        async with grpc.aio.insecure_channel(addr) as ch:
            check = health_pb2_grpc.HealthStub(ch).Check
            reply = await check(health_pb2.HealthCheckRequest(service="jetrl.v1.RewardService"), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            scored = await reward_pb2_grpc.RewardServiceStub(ch).Score(request("7", "7"), timeout=5)
            assert scored.scores[0].reward == 1.0
    finally:
        done.set()
        await asyncio.wait_for(task, 10)
        # serve() leaves its SIGTERM/SIGINT handlers on the shared loop; give Ctrl-C back to pytest
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
