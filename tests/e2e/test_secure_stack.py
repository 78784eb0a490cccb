"""The stack as `jetrl up` starts it, with gRPC over TLS and both tokens: the services call each
other (run specs from the scheduler, CreateRun's checks, the reward stage's Score calls) with
them, a short run completes, and a caller without the token is refused."""

from __future__ import annotations

import grpc
import pytest

from jetrl.rpc import channel
from jetrl.rpc_security import ClientCredentials
from jetrl.v1 import services_pb2 as svc
from jetrl.v1 import services_pb2_grpc
from runs import create_run, finished, run_id, wait_until
from tls_certs import make_tls_files

pytestmark = pytest.mark.timeout(300)


def stack_settings(tmp_path_factory) -> dict:
    """This module's stack (tests/e2e/conftest.py): TLS on every service, a token for each side."""
    tls = make_tls_files(tmp_path_factory.mktemp("tls"))
    return {
        "grpc_token": "e2e-stack-token-0123456789",
        "grpc_reward_token": "e2e-reward-token-0123456789",
        "grpc_tls_cert": tls.cert,
        "grpc_tls_key": tls.key,
        "grpc_tls_ca": tls.ca,
    }


async def test_a_run_completes_over_tls_with_tokens_and_strangers_are_refused(stack):
    rid = run_id("secure")
    # the built-in server by another name of its address: the reward stage calls it over gRPC with
    # TLS and the reward token, as any endpoint a run names (at its own address it is called in
    # process, svc_reward/stage.py)
    port = stack.settings.reward_addr.rsplit(":", 1)[1]
    await create_run(stack, stack.spec_yaml("secure", steps=2, reward=f"reward: {{endpoint: localhost:{port}}}"), rid)
    progress = await wait_until(stack, rid, finished, timeout=240)
    assert progress.state == svc.COMPLETED, progress.message
    assert progress.policy_version == 2 and progress.samples_trained == 16
    no_token = ClientCredentials(ClientCredentials.of(stack.settings).root_certificates)
    async with channel(stack.settings.scheduler_addr, no_token) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await services_pb2_grpc.SchedulerServiceStub(ch).ListRuns(svc.ListRunsRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_no_credential_reaches_a_log_a_stored_spec_or_an_error(stack):
    """After a run and a spec that names a credential, no log line of any process of the stack,
    no stored run spec and no error message holds the gRPC tokens or a NATS password."""
    from jetrl.cli.nats_config import stack_passwords
    from jetrl.lineage.db import make_engine
    from jetrl.lineage.store import LineageStore

    passwords = stack_passwords(stack.settings)
    assert passwords
    tokens = (stack.settings.grpc_token, stack.settings.grpc_reward_token)
    secrets = [t.get_secret_value() for t in tokens if t is not None] + list(passwords.values())
    assert len(secrets) == 2 + len(passwords) and all(secrets)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # the spec may not read the environment
        await create_run(stack, stack.spec_yaml("leak").replace(str(stack.model_dir), "$JETRL_GRPC_TOKEN"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    rid = run_id("leak")
    await create_run(stack, stack.spec_yaml("leak", steps=1), rid)
    assert (await wait_until(stack, rid, finished, timeout=240)).state == svc.COMPLETED
    engine = make_engine(stack.settings.database_url)
    try:
        specs = [r.spec_yaml for r in await LineageStore(engine).runs.list_runs()]
    finally:
        await engine.dispose()
    logs = [p.read_text(errors="replace") for p in (stack.settings.data_dir / "logs").iterdir()]
    assert len(logs) >= 5  # nats-server and the four services
    for secret in secrets:
        assert secret not in err.value.details()
        assert not any(secret in text for text in logs + specs)
