"""JETRL_STREAM_REPLICAS on real nats-servers: the Kubernetes NATS configuration
(deploy/k8s/base/nats/nats.conf) run as a 3-server cluster on loopback, where every stream gets 3
replicas and an R1 stream is raised to 3; and a single server, where a service declaring 3 over
existing R1 streams keeps them and starts (the StreamConfig alone: tests/unit/jetrl/test_stream_replicas.py).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
from nats.js.errors import APIError

from jetrl.bus import BusUnreachable, Kind, connect, declare
from jetrl.bus.topology import stream_name
from jetrl.config import Settings
from jetrl.localstack import free_port, nats_server_binary, stop_process, wait_tcp

ROOT = Path(__file__).resolve().parents[3]
K8S_NATS_CONF = ROOT / "deploy" / "k8s" / "base" / "nats" / "nats.conf"
USER, PASSWORD = "jetrl", "test-password"


def _loopback_conf(text: str, i: int, ports: list[tuple[int, int, int]], store: Path) -> str:
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
    assert "nats-headless" not in text and ":6222" not in text and "4222" not in text
    return text


@pytest.fixture
def cluster(tmp_path):
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    procs = []
    try:
        for i in range(3):
            store = tmp_path / f"nats-{i}"
            store.mkdir()
            conf = store / "nats.conf"
            conf.write_text(_loopback_conf(K8S_NATS_CONF.read_text(), i, ports, store))
            env = {**os.environ, "SERVER_NAME": f"nats-{i}", "NATS_USER": USER, "NATS_PASSWORD": PASSWORD}
            procs.append(
                subprocess.Popen(
                    [nats_server_binary(), "-c", str(conf)],
                    env=env,
                    stdout=open(store / "log", "ab"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        for client, _, _ in ports:
            wait_tcp("127.0.0.1", client, timeout=15)
        yield ports
    finally:
        for proc in procs:
            stop_process(proc)


def _healthz(monitor: int, query: str = "") -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/healthz{query}", timeout=2) as reply:
            return reply.status
    except OSError:
        return 0


async def _until_healthy(ports: list[tuple[int, int, int]], timeout: float = 30.0) -> None:
    """Every server answers the startup probe's /healthz (JetStream up, meta leader elected)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not all(_healthz(monitor) == 200 for _, _, monitor in ports):
        assert asyncio.get_running_loop().time() < deadline, "the 3 servers did not form a healthy cluster"
        await asyncio.sleep(0.5)


async def test_the_k8s_nats_config_forms_a_cluster_where_every_stream_has_3_replicas(cluster):
    await _until_healthy(cluster)
    for _, _, monitor in cluster:  # the readiness and liveness probes' paths answer too
        assert _healthz(monitor, "?js-server-only=true") == 200
        assert _healthz(monitor, "?js-enabled-only=true") == 200
    url = ",".join(f"nats://127.0.0.1:{client}" for client, _, _ in cluster)
    with pytest.raises(BusUnreachable, match="[Aa]uthorization"):  # the config's authorization: no anonymous clients
        await connect(Settings(nats_url=url), "anonymous", timeout=2)
    nc = await connect(Settings(nats_url=url, nats_user=USER, nats_password=PASSWORD), "test-cluster")
    try:
        js = nc.jetstream()
        await declare(js, replicas=1)  # as a stack declared with the default would have left them
        assert (await js.stream_info(stream_name(Kind.TASKS))).config.num_replicas == 1
        await declare(js, replicas=3)
        for kind in Kind:
            assert (await js.stream_info(stream_name(kind))).config.num_replicas == 3, kind
        # the new replicas join and a leader is elected in the next moments: a leader and 2 followers each
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            infos = [(await js.stream_info(stream_name(kind))).cluster for kind in Kind]
            placed = [c is not None and c.leader is not None and len(c.replicas or []) == 2 for c in infos]
            if all(placed):
                break
            assert asyncio.get_running_loop().time() < deadline, infos
            await asyncio.sleep(0.5)
        assert {c.leader for c in infos if c} <= {"nats-0", "nats-1", "nats-2"}
        consumer = await js.consumer_info(stream_name(Kind.TASKS), "rollout-workers")
        assert consumer.config.num_replicas in (0, None, 3)  # inherits its stream's
    finally:
        await nc.close()


async def test_a_single_server_keeps_r1_streams_when_a_service_asks_for_3(nats_url, caplog):
    nc = await connect(Settings(nats_url=nats_url), "test-replicas")
    try:
        js = nc.jetstream()
        await declare(js, replicas=1)
        with caplog.at_level("WARNING", logger="jetrl.bus.topology"):
            await declare(js, replicas=3)  # no exception: the service starts
        for kind in Kind:
            assert (await js.stream_info(stream_name(kind))).config.num_replicas == 1, kind
        assert any(r.getMessage() == "stream keeps its replica count" for r in caplog.records)
    finally:
        await nc.close()


async def test_a_new_stream_that_cannot_have_its_replicas_is_an_error(nats_url, monkeypatch):
    """Replicas from JETRL_STREAM_REPLICAS by default: 3 on a single server fails at the first stream."""
    nc = await connect(Settings(nats_url=nats_url), "test-replicas-new")
    try:
        monkeypatch.setenv("JETRL_STREAM_REPLICAS", "3")
        with pytest.raises(APIError, match="replicas > 1 not supported in non-clustered mode"):
            await declare(nc.jetstream(), consumers=())
        monkeypatch.setenv("JETRL_STREAM_REPLICAS", "1")
        await declare(nc.jetstream())
        assert (await nc.jetstream().stream_info(stream_name(Kind.BATCHES))).config.num_replicas == 1
    finally:
        await nc.close()
