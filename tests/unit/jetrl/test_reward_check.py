"""`jetrl reward check` against a conforming third-party server (examples/reward_server.py, its own
process), a built-in one, and servers that break the contract in the two usual ways."""

import asyncio
import signal
import subprocess
import sys

import grpc
import pytest

from jetrl.cli.main import REPO
from jetrl.cli.main import main as jetrl
from jetrl.cli.reward_check import check_server
from jetrl.localstack import free_port
from jetrl.v1 import reward_pb2, reward_pb2_grpc
from svc_reward.majority import SERVICER as MAJORITY


class Broken(reward_pb2_grpc.RewardServiceServicer):
    """Drops the last score, or answers too late."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s

    async def Describe(self, request, context):
        return reward_pb2.DescribeResponse(name="broken", version="0", contract_versions=[1])

    async def Score(self, request, context):
        await asyncio.sleep(self.delay_s)
        return reward_pb2.ScoreResponse(server="broken@0", scores=[
            reward_pb2.SampleScore(sample_id=s.sample_id, reward=1.0) for s in request.views[0].samples[:-1]])


async def serving(servicer) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    reward_pb2_grpc.add_RewardServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_the_example_third_party_server_passes_as_its_own_process():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "examples" / "reward_server.py"), "--port", str(port)])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            await asyncio.wait_for(ch.channel_ready(), 30)
        checks = await check_server(f"127.0.0.1:{port}")
        assert [c.name for c in checks] == ["Describe", "Score", "refuses an unknown contract version"]
        assert all(c.ok for c in checks), checks
        assert "exact-text@1" in checks[0].detail and "[1.0, 1.0, 0.0, 0.0]" in checks[1].detail
    finally:
        proc.send_signal(signal.SIGTERM)  # the process this test started, by its pid
        proc.wait(timeout=30)


async def test_a_built_in_server_passes_and_the_command_says_so(capsys):
    server, addr = await serving(MAJORITY)
    try:
        assert all(c.ok for c in await check_server(addr))
        assert await asyncio.to_thread(jetrl, ["reward", "check", addr]) == 0
        assert "3/3 checks passed" in capsys.readouterr().out
    finally:
        await server.stop(None)


@pytest.mark.parametrize("module", ["co_reward", "teacher", "process"])
async def test_every_built_in_server_passes_with_the_views_it_describes(module):
    import importlib

    found = importlib.import_module(f"svc_reward.{module}")
    servicer = found.ProcessServicer(found.ProcessOptions()) if module == "process" else found.SERVICER
    server, addr = await serving(servicer)
    try:
        checks = await check_server(addr)
        assert all(c.ok for c in checks), checks
    finally:
        await server.stop(None)


async def test_the_wrong_number_of_rewards_fails_with_what_the_contract_wants():
    server, addr = await serving(Broken())
    try:
        checks = {c.name: c for c in await check_server(addr)}
        assert not checks["Score"].ok
        assert checks["Score"].detail == "3 scores for 4 samples of the main view: one each"
        assert not checks["refuses an unknown contract version"].ok
        assert "refuse versions you do not know" in checks["refuses an unknown contract version"].detail
    finally:
        await server.stop(None)


async def test_a_server_that_answers_too_late_fails_on_its_deadline():
    server, addr = await serving(Broken(delay_s=3.0))
    try:
        checks = {c.name: c for c in await check_server(addr, deadline_s=0.5)}
        assert checks["Describe"].ok and not checks["Score"].ok
        assert checks["Score"].detail == "no answer within the deadline"
        assert await asyncio.to_thread(jetrl, ["reward", "check", addr, "--deadline-s", "0.5"]) == 1
    finally:
        await server.stop(None)
