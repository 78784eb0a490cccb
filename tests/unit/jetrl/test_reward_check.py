"""`jetrl reward check` against a conforming third-party server (examples/reward_server.py, its own
process), a built-in one, and servers that break the contract: too few scores, too late, scores in
another order, without ids or with wrong ones, rewards that are not finite or too large."""

import asyncio
import math
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
        return reward_pb2.ScoreResponse(
            server="broken@0",
            scores=[reward_pb2.SampleScore(sample_id=s.sample_id, reward=1.0) for s in request.views[0].samples[:-1]],
        )


class Misbehaving(reward_pb2_grpc.RewardServiceServicer):
    """Scores every sample 1 (its id named), then hands the scores to `mangle` before replying."""

    def __init__(self, mangle):
        self.mangle = mangle

    async def Describe(self, request, context):
        return reward_pb2.DescribeResponse(name="misbehaving", version="0", contract_versions=[1])

    async def Score(self, request, context):
        if request.contract_version != 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "contract_version 1 only")
        scores = [reward_pb2.SampleScore(sample_id=s.sample_id, reward=1.0) for s in request.views[0].samples]
        return reward_pb2.ScoreResponse(server="misbehaving@0", scores=self.mangle(scores))


def _set(index: int, **fields):
    def mangle(scores):
        for name, value in fields.items():
            setattr(scores[index], name, value)
        return scores

    return mangle


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
        assert [c.name for c in checks] == [
            "Describe",
            "Score",
            "Score, samples in another order",
            "refuses an unknown contract version",
        ]
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
        assert "4/4 checks passed" in capsys.readouterr().out
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


@pytest.mark.parametrize(
    ("mangle", "score_fails", "detail"),
    [
        (
            lambda scores: scores[::-1],
            "Score",
            "scores name samples ['check.g0.3', 'check.g0.2', 'check.g0.1', 'check.g0.0'], want ['check.g0.0', "
            "'check.g0.1', 'check.g0.2', 'check.g0.3'] in that order",
        ),
        (
            lambda scores: sorted(scores, key=lambda s: s.sample_id),
            "Score, samples in another order",
            "scores name samples ['check.g1.0', 'check.g1.1', 'check.g1.2', 'check.g1.3'], want ['check.g1.3', "
            "'check.g1.2', 'check.g1.1', 'check.g1.0'] in that order",
        ),
        (
            _set(0, sample_id="check.g0.1"),
            "Score",
            "samples ['check.g0.1'] are scored more than once: one score per sample",
        ),
        (
            _set(2, sample_id="someone-else"),
            "Score",
            "scores name ['someone-else'], which are not samples of the request",
        ),
        (_set(1, sample_id=""), "Score", "1 of 4 scores name no sample: name every one"),
        (
            lambda scores: [reward_pb2.SampleScore(reward=s.reward) for s in scores],
            "Score",
            "no score names its sample",
        ),
        (_set(3, reward=math.nan), "Score", "rewards [1.0, 1.0, 1.0, nan]: every reward must be a finite number"),
        (_set(0, reward=math.inf), "Score", "rewards [inf, 1.0, 1.0, 1.0]: every reward must be a finite number"),
        (_set(1, reward=1e30), "Score", "a run refuses any beyond ±100 (reward.max_abs_reward)"),
    ],
)
async def test_a_reply_the_reward_stage_would_refuse_fails_the_check(mangle, score_fails, detail):
    server, addr = await serving(Misbehaving(mangle))
    try:
        checks = {c.name: c for c in await check_server(addr)}
        assert checks["Describe"].ok and checks["refuses an unknown contract version"].ok
        assert not checks[score_fails].ok and detail in checks[score_fails].detail, checks[score_fails]
        assert await asyncio.to_thread(jetrl, ["reward", "check", addr]) == 1
    finally:
        await server.stop(None)


async def test_a_well_behaved_reply_passes_with_its_latency():
    server, addr = await serving(Misbehaving(lambda scores: scores))
    try:
        checks = await check_server(addr)
        assert all(c.ok for c in checks), checks
        assert "4 rewards within ±100, named and in order, in " in checks[1].detail
        assert " ms: [1.0, 1.0, 1.0, 1.0]" in checks[1].detail
    finally:
        await server.stop(None)


def test_a_bad_reply_fails_the_check_under_python_dash_o_too():
    """The checks used to be `assert`s, which `python -O` strips: every server passed."""
    import subprocess
    import sys

    code = (
        "from jetrl.cli.reward_check import CheckFailed, _check_reply\n"
        "from jetrl.v1 import reward_pb2 as r\n"
        "req = r.ScoreRequest(views=[r.RewardView(samples=[r.RewardSample(sample_id='a')])])\n"
        "rep = r.ScoreResponse(server='x@1', scores=[r.SampleScore(sample_id='a', reward=float('nan'))])\n"
        "try:\n    _check_reply(req, rep, 100.0)\nexcept CheckFailed as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=60)
    assert "every reward must be a finite number" in out.stdout, out
