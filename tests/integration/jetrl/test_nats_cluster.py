"""JETRL_STREAM_REPLICAS on real nats-servers: the Kubernetes NATS configuration
(deploy/k8s/base/nats/nats.conf) run as a 3-server cluster on loopback, where every stream gets 3
replicas and an R1 stream is raised to 3; and a single server, where a service declaring 3 over
existing R1 streams keeps them and starts (the StreamConfig alone: tests/unit/jetrl/test_stream_replicas.py).
"""

from __future__ import annotations

import asyncio

import pytest
from nats.js.errors import APIError

from jetrl.bus import BusUnreachable, Kind, connect, declare
from jetrl.bus.topology import CONSUMERS, stream_name
from jetrl.cli.nats_config import declare_layout
from jetrl.config import Settings
from loopback_nats_cluster import PASSWORD, USER, loopback_cluster

REFUSED = "(?i)authorization|connection reset"


@pytest.fixture
def cluster(tmp_path):
    with loopback_cluster(tmp_path) as servers:
        yield servers


async def test_the_k8s_nats_config_forms_a_cluster_where_every_stream_has_3_replicas(cluster):
    await cluster.until_healthy()
    for i in range(3):  # the readiness and liveness probes' paths answer too
        assert cluster.healthz(i, "?js-server-only=true") == 200
        assert cluster.healthz(i, "?js-enabled-only=true") == 200
    url = cluster.url
    # the config's authorization: no anonymous clients (the server answers -ERR 'Authorization
    # Violation' and closes the connection; a loaded client may read the close first)
    with pytest.raises(BusUnreachable, match=REFUSED):
        await connect(Settings(nats_url=url), "anonymous", timeout=2)
    nc = await connect(Settings(nats_url=url, nats_user=USER, nats_password=PASSWORD), "test-cluster")
    try:
        js = nc.jetstream()
        await declare(js, replicas=1)  # as a stack declared with the default would have left them
        assert (await js.stream_info(stream_name(Kind.TASKS))).config.num_replicas == 1
        await declare(js, replicas=3)
        for kind in Kind:
            assert (await js.stream_info(stream_name(kind))).config.num_replicas == 3, kind
        await until_placed_on_3(js)
    finally:
        await nc.close()


async def until_placed_on_3(js, timeout: float = 30.0) -> None:
    """Every stream and durable consumer has a leader and 2 followers on the 3 servers (the new
    replicas join and elect in the moments after a declare). A consumer left on 1 server dies
    with it: once a run's rollout-workers consumer stayed R1 after its stream was raised to 3,
    and the run waited forever when that server was killed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        infos = [(stream_name(kind), (await js.stream_info(stream_name(kind))).cluster) for kind in Kind]
        infos += [(c.name, (await js.consumer_info(c.stream, c.name)).cluster) for c in CONSUMERS]
        unplaced = [(n, c) for n, c in infos if c is None or c.leader is None or len(c.replicas or []) != 2]
        if not unplaced:
            break
        assert asyncio.get_running_loop().time() < deadline, unplaced
        await asyncio.sleep(0.5)
    assert {c.leader for _, c in infos if c} <= {"nats-0", "nats-1", "nats-2"}
    for consumer in CONSUMERS:
        assert (await js.consumer_info(consumer.stream, consumer.name)).config.num_replicas == 3, consumer.name


async def test_the_admin_declares_with_the_replicas_of_its_settings_not_its_environment(cluster, monkeypatch):
    """`jetrl nats declare` and `jetrl up` declare with the settings they were given: a stack
    started with stream_replicas 3 in its settings (as the node-loss test starts one) once got R1
    streams from the environment's default, raised to 3 only when the services declared again."""
    await cluster.until_healthy()
    monkeypatch.delenv("JETRL_STREAM_REPLICAS", raising=False)
    settings = Settings(nats_url=cluster.url, nats_user=USER, nats_password=PASSWORD, stream_replicas=3)
    await declare_layout(settings)
    nc = await connect(settings, "test-cluster")
    try:
        for kind in Kind:
            assert (await nc.jetstream().stream_info(stream_name(kind))).config.num_replicas == 3, kind
        await until_placed_on_3(nc.jetstream())
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


async def test_a_new_stream_that_cannot_have_its_replicas_is_an_error(nats_url):
    """3 replicas on a single server fails at the first stream; 1 declares them."""
    nc = await connect(Settings(nats_url=nats_url), "test-replicas-new")
    try:
        with pytest.raises(APIError, match="replicas > 1 not supported in non-clustered mode"):
            await declare(nc.jetstream(), consumers=(), replicas=3)
        await declare(nc.jetstream(), replicas=1)
        assert (await nc.jetstream().stream_info(stream_name(Kind.BATCHES))).config.num_replicas == 1
    finally:
        await nc.close()
