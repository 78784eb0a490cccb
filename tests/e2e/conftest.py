"""The whole stack for end-to-end tests: its own nats-server, a test database, the four services.

The services are started exactly as `jetrl up` starts them (jetrl.cli.stack), on free ports, with
a tiny starting checkpoint made by a short bootstrap, and export their spans to a real OTLP
receiver. One stack serves a whole test module; each test submits its own run.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from jetrl.config import Settings
from jetrl.spec_sections import TaskSpec

HELDOUT = 40


@dataclass
class Stack:
    settings: Settings
    model_dir: Path
    receiver: object

    def spec_yaml(self, name: str, steps: int = 3, batch_groups: int = 2, group_size: int = 4, **extra) -> str:
        """A small run spec on the stack's tiny model (extra: yaml lines appended as is)."""
        lines = [
            f"name: {name}",
            f"model: {{path: {self.model_dir}}}",
            f"task: {{name: arithmetic, heldout_size: {HELDOUT}}}",
            f"rollout: {{group_size: {group_size}, max_new_tokens: 5}}",
            f"train: {{steps: {steps}, batch_groups: {batch_groups}, lr: 0.001}}",
            "schedule: {eval_every: 0}",
            *extra.values(),
        ]
        return "\n".join(lines) + "\n"

    def pid(self, module: str) -> int:
        return int((self.settings.data_dir / "pids" / f"{module}.pid").read_text())

    def kill(self, module: str) -> None:
        """SIGKILL the service we started (by the pid we recorded) and reap it."""
        pid = self.pid(module)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

    def stop(self, module: str) -> None:
        """SIGTERM the service we started (by its pid) and reap it."""
        pid = self.pid(module)
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)

    async def restart(self, module: str, **env: str) -> subprocess.Popen:
        """Start the service again (with `env` added to its environment) and wait until it serves."""
        from jetrl.cli.stack import SERVICES, start_service
        from jetrl.rpc import wait_serving

        proc = start_service(self.settings, module, env=env)
        await wait_serving(getattr(self.settings, SERVICES[module]), self.settings, timeout=90, what=module)
        return proc


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A starting checkpoint from a very short warm-up: fast to make, and it answers something."""
    from jetrl.policy.bootstrap import bootstrap

    out = tmp_path_factory.mktemp("model") / "tiny-arith"
    bootstrap(out, TaskSpec(heldout_size=HELDOUT), steps=60)
    return out


@pytest.fixture(scope="module")
def stack(request, database_url, tiny_model, tmp_path_factory):
    """The module's stack; a module's `stack_settings(tmp_path_factory)`, if it has one, gives more
    settings (tests/e2e/test_secure_stack.py: TLS and tokens)."""
    from jetrl.cli.stack import down, isolated_settings, up
    from otlp_receiver import OtlpReceiver

    receiver = OtlpReceiver().start()
    extra = getattr(request.module, "stack_settings", lambda _: {})(tmp_path_factory)
    settings = isolated_settings(tmp_path_factory.mktemp("stack"), database_url, torch_threads=1, **extra)
    saved = {k: os.environ.get(k) for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_BSP_SCHEDULE_DELAY")}
    os.environ.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="500")
    try:
        up(settings)
        yield Stack(settings, tiny_model, receiver)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        down(settings)
        receiver.stop()


@pytest.fixture
async def store(stack):
    """The lineage store of the module's stack."""
    from jetrl.lineage.db import make_engine
    from jetrl.lineage.store import LineageStore

    engine = make_engine(stack.settings.database_url)
    yield LineageStore(engine)
    await engine.dispose()
