"""gRPC trust: the scheduler's, rollout worker's and trainer's servicers behind serve() with TLS and a
token, called by real clients. Wrong or missing token: UNAUTHENTICATED; plaintext to TLS: no
answer; health: no token needed; a bad field: INVALID_ARGUMENT, never UNKNOWN."""

from __future__ import annotations

import asyncio
import math
import signal

import grpc
import pytest

from jetrl.config import Settings
from jetrl.localstack import free_port
from jetrl.rpc import channel, is_serving
from jetrl.rpc_security import LOCAL, ClientCredentials, ServerSecurity
from jetrl.runs import RunNotFound
from jetrl.service import serve
from jetrl.v1 import reward_pb2, reward_pb2_grpc
from jetrl.v1 import services_pb2 as svc
from jetrl.v1 import services_pb2_grpc as stubs
from svc_reward.server import VerifyServicer, reward_register
from svc_rollout.policies import Policies
from svc_rollout.server import RolloutServicer
from svc_rollout.server import register as rollout_register
from svc_rollout.worker import RolloutWorker
from svc_scheduler.preflight import Peers
from svc_scheduler.server import SchedulerServicer
from svc_scheduler.server import register as scheduler_register
from svc_trainer.server import TrainerServicer
from svc_trainer.server import register as trainer_register
from svc_trainer.worker import Trainer
from tls_certs import make_tls_files

TOKEN = "stack-token-0123456789abcdef"
REWARD_TOKEN = "reward-token-0123456789abcdef"


class NoRuns:
    """RunSpecs stand-in: the scheduler knows no run."""

    async def get(self, run_id: str):
        raise RunNotFound(f"run {run_id!r} is unknown to the scheduler")


async def _serving(addr: str, register, security: ServerSecurity):
    """serve() in this process until the returned `stop` is awaited."""
    ready, done = asyncio.Event(), asyncio.Event()

    async def until_done(stop: asyncio.Event) -> None:  # stands in for SIGTERM
        await done.wait()
        stop.set()

    task = asyncio.create_task(serve("test", addr, register, [until_done], ready=ready, security=security))
    await asyncio.wait_for(ready.wait(), 30)

    async def stop() -> None:
        done.set()
        await asyncio.wait_for(task, 30)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):  # serve() leaves its handlers on the shared loop
            loop.remove_signal_handler(sig)

    return stop


@pytest.fixture
async def secure(tmp_path, lineage):
    """The three servicers on one TLS port requiring TOKEN; yields (address, the clients' Settings)."""
    tls = make_tls_files(tmp_path / "tls")
    settings = Settings(
        grpc_token=TOKEN, grpc_tls_cert=tls.cert, grpc_tls_key=tls.key, grpc_tls_ca=tls.ca, data_dir=tmp_path
    )
    servicers = [
        scheduler_register(SchedulerServicer(None, lineage, Peers.of(settings))),  # type: ignore[arg-type]
        rollout_register(RolloutServicer(RolloutWorker(None, Policies(NoRuns()), "w1"))),  # type: ignore[arg-type]
        trainer_register(TrainerServicer(Trainer(js=None, specs=None, data_dir=tmp_path, advertised_addr=""))),
    ]
    addr = f"127.0.0.1:{free_port()}"
    stop = await _serving(addr, lambda server: [n for r in servicers for n in r(server)], ServerSecurity.of(settings))
    yield addr, settings
    await stop()


async def _fetch(ch: grpc.aio.Channel, **fields) -> None:
    await stubs.TrainerServiceStub(ch).FetchWeights(svc.FetchWeightsRequest(**fields), timeout=10).read()


async def _watch(ch: grpc.aio.Channel, run_id: str) -> None:
    await stubs.SchedulerServiceStub(ch).WatchRun(svc.WatchRunRequest(run_id=run_id), timeout=10).read()


# the calls an outsider must not make, and what each answers the right token (it got past the check)
CALLS = {
    "CreateRun": (
        lambda ch: stubs.SchedulerServiceStub(ch).CreateRun(svc.CreateRunRequest(spec_yaml="name: x\n"), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,  # the spec has no model
    ),
    "StopRun": (
        lambda ch: stubs.SchedulerServiceStub(ch).StopRun(svc.StopRunRequest(run_id="nope"), timeout=10),
        grpc.StatusCode.NOT_FOUND,
    ),
    "FetchWeights": (lambda ch: _fetch(ch, run_id="nope", version=1), grpc.StatusCode.NOT_FOUND),
    "Generate": (
        lambda ch: stubs.RolloutServiceStub(ch).Generate(
            svc.GenerateRequest(run_id="nope", prompts=["1+1="], max_new_tokens=4), timeout=10
        ),
        grpc.StatusCode.NOT_FOUND,
    ),
}


async def _code(addr: str, credentials: ClientCredentials, call) -> grpc.aio.AioRpcError:
    async with channel(addr, credentials) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(ch)
    return err.value


@pytest.mark.parametrize("name", CALLS)
async def test_only_the_right_token_over_tls_gets_past_the_check(secure, name):
    addr, settings = secure
    call, expected = CALLS[name]
    right = ClientCredentials.of(settings)
    assert (await _code(addr, right, call)).code() == expected
    for token in (None, "x" * len(TOKEN), TOKEN + "x"):
        refused = await _code(addr, ClientCredentials(right.root_certificates, token), call)
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED, (name, token)
        assert "JETRL_GRPC_TOKEN" in (refused.details() or "") and TOKEN not in (refused.details() or "")


async def test_plaintext_to_tls_gets_nothing_and_health_needs_no_token(secure):
    addr, settings = secure
    plaintext = ClientCredentials(token=TOKEN)
    assert (await _code(addr, plaintext, CALLS["StopRun"][0])).code() == grpc.StatusCode.UNAVAILABLE
    assert not await is_serving(addr, plaintext)
    tls_no_token = ClientCredentials(ClientCredentials.of(settings).root_certificates)
    assert await is_serving(addr, tls_no_token)


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda ch, d: stubs.TrainerServiceStub(ch).GetStatus(svc.TrainerStatusRequest(run_id=d)), "run_id"),
        (lambda ch, d: _fetch(ch, run_id="../run", version=1), "run_id"),
        (lambda ch, d: _fetch(ch, run_id="run", version=1, file="../../trainer.pt"), "file"),
        (lambda ch, d: _fetch(ch, run_id="run", version=1, chunk_bytes=1 << 30), "chunk_bytes"),
        (lambda ch, d: _fetch(ch, run_id="run", version=0), "version"),
        (lambda ch, d: stubs.SchedulerServiceStub(ch).GetRun(svc.GetRunRequest(run_id="r" * 200)), "run_id"),
        (lambda ch, d: stubs.SchedulerServiceStub(ch).StopRun(svc.StopRunRequest(run_id="run\x00")), "run_id"),
        (
            lambda ch, d: stubs.SchedulerServiceStub(ch).StopRun(svc.StopRunRequest(run_id="r", reason="a\x00b")),
            "reason",
        ),
        (lambda ch, d: _watch(ch, "a/b"), "run_id"),
        (lambda ch, d: stubs.SchedulerServiceStub(ch).CreateRun(svc.CreateRunRequest(run_id="a.b")), "run_id"),
        (
            lambda ch, d: stubs.RolloutServiceStub(ch).Generate(
                svc.GenerateRequest(run_id="r", prompts=["1+1="], max_new_tokens=4, temperature=math.nan)
            ),
            "temperature",
        ),
        (lambda ch, d: stubs.RolloutServiceStub(ch).Evaluate(svc.EvaluateRequest(run_id="r", limit=-1)), "limit"),
    ],
)
async def test_a_bad_field_is_invalid_argument_naming_it(secure, tmp_path, call, needle):
    addr, settings = secure
    # an absolute directory as a run id would have the trainer look for state in it
    error = await _code(addr, ClientCredentials.of(settings), lambda ch: call(ch, str(tmp_path)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in (error.details() or "")


async def test_reward_servers_check_their_own_token_never_the_stacks():
    settings = Settings(grpc_token=TOKEN, grpc_reward_token=REWARD_TOKEN)
    addr = f"127.0.0.1:{free_port()}"
    stop = await _serving(addr, reward_register(VerifyServicer()), ServerSecurity.of(settings, reward=True))
    try:

        def describe(ch):
            return reward_pb2_grpc.RewardServiceStub(ch).Describe(reward_pb2.DescribeRequest(), timeout=10)

        for stack_side in (ClientCredentials.of(settings), LOCAL):
            refused = await _code(addr, stack_side, describe)
            assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "JETRL_GRPC_REWARD_TOKEN" in (refused.details() or "")
        async with channel(addr, ClientCredentials.of(settings, reward=True)) as ch:
            assert (await describe(ch)).name == "verify"
    finally:
        await stop()
