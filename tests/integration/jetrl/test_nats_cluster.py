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
from jetrl.bus.topology import stream_name
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
