"""The chaos suite's private stack and the faults it can suffer.

Everything is the project's own launcher: a Postgres cluster of its own (cluster.py), then
`jetrl up`'s private stack (jetrl/cli/bench_runs.py `private_stack`: its own nats-server with a
JetStream store dir, the four services on free ports, pids under data_dir/pids). A killed
service comes back exactly as `up` started it (`start_service`), the broker on the same port
with the same store (`ensure_nats`). Every process is ended by the pid this process recorded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jetrl.chaos.cluster import PrivateCluster
from jetrl.cli.stack import SERVICES, ensure_nats, start_service
from jetrl.config import Settings
from jetrl.localstack import free_port, pid_alive
from jetrl.rpc import wait_serving

__all__ = ["ChaosStack", "chaos_stack", "EXTRA_WORKER"]

EXTRA_WORKER = "svc_rollout-2"  # the second rollout worker's name: pid file, log, worker id
SERVING_TIMEOUT_S = 120.0  # a restarted service loads torch and the model on a busy machine


def _reap(pid: int, timeout: float = 10.0) -> int | None:
    """Wait until `pid` is gone (collecting it when it is our child); its exit code if we collected it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
        except ChildProcessError:  # not our child, or already collected
            if not pid_alive(pid):
                return None
        if time.monotonic() > deadline:
            raise TimeoutError(f"pid {pid} still there {timeout:.0f}s after SIGKILL")
        time.sleep(0.05)


class ChaosStack:
    def __init__(self, settings: Settings, cluster: PrivateCluster, model_dir: Path):
        self.settings = settings
        self.cluster = cluster
        self.model_dir = model_dir
        self.logs = settings.data_dir.resolve() / "logs"
        self.pids = settings.data_dir.resolve() / "pids"

    def pid(self, name: str) -> int:
        return int((self.pids / f"{name}.pid").read_text())

    def kill(self, name: str) -> None:
        """SIGKILL a process of the stack (a service module, nats-server, the extra worker) by its pid."""
        pid = self.pid(name)
        os.kill(pid, signal.SIGKILL)
        _reap(pid)

    async def restart(self, module: str) -> None:
        start_service(self.settings, module)
        await wait_serving(
            getattr(self.settings, SERVICES[module]), self.settings, timeout=SERVING_TIMEOUT_S, what=module
        )

    def restart_broker(self) -> None:
        """The broker back on its port with its JetStream store (nothing answers there, so
        `ensure_nats` starts one, exactly as `up` did)."""
        ensure_nats(self.settings)

    async def outage(self, seconds: float) -> float:
        """Postgres down for `seconds` (stopped as by a crash), then up again; the real length."""
        began = time.monotonic()
        await asyncio.to_thread(self.cluster.stop, "immediate")
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - began)))
        await asyncio.to_thread(self.cluster.start)
        return time.monotonic() - began

    async def start_extra_worker(self) -> None:
        """A second rollout worker beside the stack's, on its own port (its pid, log and worker id
        named EXTRA_WORKER; `down` ends it with the rest if it is still there)."""
        addr = f"127.0.0.1:{free_port()}"
        start_service(self.settings, "svc_rollout", listen=addr, name=EXTRA_WORKER)
        await wait_serving(addr, self.settings, timeout=SERVING_TIMEOUT_S, what=EXTRA_WORKER)

    def end_extra_worker(self) -> bool:
        """SIGKILL the second worker if it is there (never restarted); True when it was alive."""
        pid_file = self.pids / f"{EXTRA_WORKER}.pid"
        if not pid_file.exists():
            return False
        alive = pid_alive(self.pid(EXTRA_WORKER))
        if alive:
            self.kill(EXTRA_WORKER)
        pid_file.unlink()
        return alive

    def last_error(self, name: str) -> str:
        """The newest ERROR line of a process's log (else its last line): why it went away."""
        path = self.logs / f"{name}.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        errors = [line for line in lines if '"level": "ERROR"' in line] or lines
        return errors[-1][:400] if errors else "(empty log)"

    async def revive(self) -> list[str]:
        """Services and broker that died on their own since the last look, restarted so the next
        trial starts whole; one line each saying how it ended."""
        notes = []
        for name in (*SERVICES, "nats-server"):
            pid = self.pid(name)
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
                code = os.waitstatus_to_exitcode(status) if done else None
                alive = not done
            except ChildProcessError:
                code, alive = None, pid_alive(pid)
            if alive:
                continue
            notes.append(
                f"{name} exited on its own (code {'unknown' if code is None else code}); "
                f"its last error: {self.last_error(name)}"
            )
            if name == "nats-server":
                self.restart_broker()
            else:
                await self.restart(name)
        return notes

    async def wait_whole(self) -> None:
        """Every service SERVING (after a fault, a restarted one may still be loading)."""
        for module, field in SERVICES.items():
            await wait_serving(getattr(self.settings, field), self.settings, timeout=SERVING_TIMEOUT_S, what=module)


@contextmanager
def chaos_stack(model_dir: Path, logs_to: Path | None = None) -> Iterator[ChaosStack]:
    """Cluster, then stack; torn down the other way round. Logs are copied to `logs_to`."""
    from jetrl.bench.stack import private_stack

    with PrivateCluster() as cluster, private_stack(cluster.url, logs_to=logs_to, torch_threads=1) as settings:
        yield ChaosStack(settings, cluster, model_dir)
