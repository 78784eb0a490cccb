"""The service runtime rides out its dependencies: workers restarted, health, UNAVAILABLE."""

import asyncio
import signal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.exc import OperationalError

from jetrl import service
from jetrl.localstack import free_port
from jetrl.rpc_security import ServerSecurity
from jetrl.v1 import services_pb2, services_pb2_grpc

OUTAGE = OperationalError("SELECT 1", {}, ConnectionRefusedError("postgres is restarting"))


class Scheduler(services_pb2_grpc.SchedulerServiceServicer):
    async def GetRun(self, request, context):
        if request.run_id == "outage":
            raise OUTAGE
        raise RuntimeError("a bug")


def register(server):
    services_pb2_grpc.add_SchedulerServiceServicer_to_server(Scheduler(), server)
    return [services_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name]


async def health(addr: str) -> int:
    async with grpc.aio.insecure_channel(addr) as ch:
        return (await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)).status


async def eventually(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def running(monkeypatch):
    """serve() in this process with one flaky worker and a probe the test sets; yields its address."""
    monkeypatch.setattr(service, "RESTART_DELAYS_S", (0.1,))
    monkeypatch.setattr(service, "RECOVERED_AFTER_S", 0.3)
    monkeypatch.setattr(service, "PROBE_EVERY_S", 0.05)
    state = {"fail": 2, "starts": 0, "probe": None}

    async def flaky(stop: asyncio.Event) -> None:
        state["starts"] += 1
        if state["fail"]:
            state["fail"] -= 1
            raise OUTAGE
        await stop.wait()

    async def probe():
        return state["probe"]

    addr = f"127.0.0.1:{free_port()}"
    ready = asyncio.Event()
    task = asyncio.create_task(
        service.serve("test", addr, register, [flaky], ready=ready, probe=probe, security=ServerSecurity())
    )
    await ready.wait()
    yield addr, state
    signal.raise_signal(signal.SIGTERM)
    await asyncio.wait_for(task, 15)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # give Ctrl-C back to pytest
        loop.remove_signal_handler(sig)


async def test_a_failing_worker_is_started_again_and_the_process_stays(running):
    addr, state = running
    await eventually(lambda: _true(state["starts"] == 3))
    await eventually(lambda: _is(health(addr), health_pb2.HealthCheckResponse.SERVING))


async def test_health_follows_the_probe(running):
    addr, state = running
    await eventually(lambda: _is(health(addr), health_pb2.HealthCheckResponse.SERVING))
    state["probe"] = "Postgres: connection refused"
    await eventually(lambda: _is(health(addr), health_pb2.HealthCheckResponse.NOT_SERVING))
    state["probe"] = None
    await eventually(lambda: _is(health(addr), health_pb2.HealthCheckResponse.SERVING))


async def test_an_outage_answers_unavailable_and_a_bug_unknown(running):
    addr, _ = running
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = services_pb2_grpc.SchedulerServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as outage:
            await stub.GetRun(services_pb2.GetRunRequest(run_id="outage"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as bug:
            await stub.GetRun(services_pb2.GetRunRequest(run_id="bug"), timeout=5)
    assert outage.value.code() == grpc.StatusCode.UNAVAILABLE and "retry" in outage.value.details()
    assert bug.value.code() == grpc.StatusCode.UNKNOWN


async def _true(value: bool) -> bool:
    return value


async def _is(awaitable, want) -> bool:
    return await awaitable == want
