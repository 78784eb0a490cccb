"""JETRL_STREAM_REPLICAS (Settings.stream_replicas): the StreamConfig every stream is declared with,
and what `declare` does when a stream exists with another replica count, against a stand-in for
JetStream's stream API (on real nats-servers, a 3-node cluster included:
tests/integration/jetrl/test_nats_cluster.py)."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from nats.js.api import ConsumerConfig
from nats.js.errors import BadRequestError, NotFoundError, ServerError
from pydantic import ValidationError

from jetrl.bus import CONSUMERS, Kind, declare
from jetrl.bus.refusals import PermissionDenied
from jetrl.bus.topology import declare_stream, stream_config, stream_name
from jetrl.config import Settings


def test_the_setting_defaults_to_one_and_is_bounded(monkeypatch):
    monkeypatch.delenv("JETRL_STREAM_REPLICAS", raising=False)
    assert Settings().stream_replicas == 1
    monkeypatch.setenv("JETRL_STREAM_REPLICAS", "3")
    assert Settings().stream_replicas == 3
    for bad in ("0", "6", "three"):
        monkeypatch.setenv("JETRL_STREAM_REPLICAS", bad)
        with pytest.raises(ValidationError):
            Settings()


@pytest.mark.parametrize("kind", list(Kind))
def test_every_stream_config_carries_the_replicas_and_nothing_else_changes(kind):
    one, three = stream_config(kind), stream_config(kind, 3)
    assert one.num_replicas == 1 and three.num_replicas == 3
    assert dataclasses.replace(three, num_replicas=1) == one


@pytest.mark.parametrize("replicas", [1, 3])
def test_durable_consumers_carry_the_replicas_they_are_given(replicas):
    assert {spec.config(replicas).num_replicas for spec in CONSUMERS} == {replicas}


class FakeJetStream:
    """JetStream's stream API as a server answers it: `servers` in the cluster (1: not clustered)."""

    def __init__(self, servers: int, existing: dict[str, int] | None = None, read_only: bool = False):
        self.servers = servers
        self.read_only = read_only  # connected as a service role: reading the layout only
        self.streams = {
            stream_name(kind): stream_config(kind, existing.get(stream_name(kind), 1))
            for kind in Kind
            if existing and stream_name(kind) in existing
        }
        self.consumers: list[str] = []
        self.consumer_configs: dict[str, ConsumerConfig] = {}

    def _check(self, config) -> None:
        if self.read_only:
            raise PermissionDenied("svc_reward: permissions violation for publish to $JS.API...")
        if config.num_replicas > 1 and self.servers == 1:
            raise ServerError(code=500, err_code=10074, description="replicas > 1 not supported in non-clustered mode")
        if config.num_replicas > self.servers:
            raise ServerError(code=500, err_code=10023, description="insufficient resources")

    async def add_stream(self, config):
        self._check(config)
        if config.name in self.streams and self.streams[config.name] != config:
            raise BadRequestError(code=400, err_code=10058, description="stream name already in use")
        self.streams[config.name] = config

    async def update_stream(self, config):
        if config.name not in self.streams:
            raise NotFoundError(code=404, err_code=10059, description="stream not found")
        self._check(config)
        self.streams[config.name] = config

    async def stream_info(self, name):
        if name not in self.streams:
            raise NotFoundError(code=404, err_code=10059, description="stream not found")
        return type("Info", (), {"config": self.streams[name]})()

    async def add_consumer(self, stream, config):
        if self.read_only:
            raise PermissionDenied("svc_reward: permissions violation for publish to $JS.API...")
        self.consumers.append(config.durable_name)
        self.consumer_configs[config.durable_name] = config

    async def consumer_info(self, stream, name):
        if name not in self.consumer_configs:
            raise NotFoundError(code=404, err_code=10014, description="consumer not found")
        return type("Info", (), {"config": self.consumer_configs[name]})()


async def test_declare_gives_every_stream_and_consumer_the_replicas_asked_not_the_environments(monkeypatch):
    monkeypatch.setenv("JETRL_STREAM_REPLICAS", "1")
    js = FakeJetStream(servers=3)
    await declare(js, replicas=3)
    assert {c.num_replicas for c in js.streams.values()} == {3} and len(js.streams) == len(Kind)
    assert {c.num_replicas for c in js.consumer_configs.values()} == {3} and len(js.consumers) == len(CONSUMERS)


async def test_a_cluster_raises_existing_r1_streams_to_3():
    js = FakeJetStream(servers=3, existing={stream_name(k): 1 for k in Kind})
    await declare(js, replicas=3)
    assert {c.num_replicas for c in js.streams.values()} == {3}


@pytest.mark.parametrize("servers", [1, 2])
async def test_an_existing_stream_keeps_its_count_when_the_server_refuses(servers, caplog):
    """A single server (or a cluster short of servers) asked for 3 over R1 streams: the service
    starts, the streams stay R1, and the log says why."""
    js = FakeJetStream(servers=servers, existing={stream_name(k): 1 for k in Kind})
    with caplog.at_level(logging.WARNING, logger="jetrl.bus.topology"):
        await declare(js, replicas=3)
    assert {c.num_replicas for c in js.streams.values()} == {1}
    assert {c.num_replicas for c in js.consumer_configs.values()} == {1}  # as many as their stream has
    warned = [r for r in caplog.records if r.getMessage() == "stream keeps its replica count"]
    assert len(warned) == len(Kind)


async def test_a_new_stream_that_cannot_have_its_replicas_is_an_error():
    with pytest.raises(ServerError, match="non-clustered"):
        await declare_stream(FakeJetStream(servers=1), Kind.TASKS, 3)


async def test_other_config_changes_still_update_the_stream():
    js = FakeJetStream(servers=1)
    old = dataclasses.replace(stream_config(Kind.TASKS), max_msg_size=1024)
    js.streams[old.name] = old
    await declare_stream(js, Kind.TASKS, 1)
    assert js.streams[old.name] == stream_config(Kind.TASKS)


async def test_a_service_starts_on_streams_whose_replica_count_differs_from_its_setting(caplog):
    """A single server holding the admin's R1 layout, a service (read-only, as its role) set to 3:
    it starts with a warning that names the admin step, as the admin's declare keeps R1 with one."""
    admin = FakeJetStream(servers=1)
    await declare(admin, replicas=1)
    service = FakeJetStream(servers=1, read_only=True)
    service.streams, service.consumer_configs = admin.streams, admin.consumer_configs
    with caplog.at_level(logging.WARNING, logger="jetrl.bus.topology"):
        await declare(service, replicas=3)
    [warned] = [r for r in caplog.records if r.getMessage() == "streams keep their replica count"]
    assert "jetrl nats declare" in warned.fields["what_to_do"] and len(warned.fields["streams"]) == len(Kind)
    # anything else that differs is still the admin's to declare: the service does not start
    name = CONSUMERS[0].name
    service.consumer_configs[name] = dataclasses.replace(service.consumer_configs[name], ack_wait=1.0)
    with pytest.raises(PermissionDenied, match="jetrl nats declare"):
        await declare(service, replicas=3)
