"""Declaring the streams and consumers on a real nats-server: twice, concurrently, and again with
a changed consumer (subjects and the topology's tables: tests/unit/jetrl/test_bus_topology.py)."""

import asyncio

import pytest
from nats.js.api import RetentionPolicy, StorageType

from jetrl.bus import CONSUMERS, ConsumerSpec, Kind, connect, declare
from jetrl.bus.topology import DUPLICATE_WINDOW_S, MAX_MSG_SIZE, WORK_QUEUES, stream_name
from jetrl.config import Settings


@pytest.fixture
async def nc(nats_url):
    client = await connect(Settings(nats_url=nats_url), "test-topology")
    yield client
    await client.close()


async def test_declare_twice_and_concurrently_is_fine(nc, nats_url):
    others = [await connect(Settings(nats_url=nats_url), f"test-{i}") for i in range(3)]
    try:
        await asyncio.gather(*(declare(c.jetstream(), replicas=1) for c in [nc, *others]))
        await declare(nc.jetstream(), replicas=1)
    finally:
        for c in others:
            await c.close()
    js = nc.jetstream()
    for kind in Kind:
        info = await js.stream_info(stream_name(kind))
        assert info.config.subjects == [f"jetrl.*.{kind}"]
        assert info.config.storage == StorageType.FILE
        assert info.config.duplicate_window == DUPLICATE_WINDOW_S
        assert info.config.max_msg_size == MAX_MSG_SIZE
        want = RetentionPolicy.WORK_QUEUE if kind in WORK_QUEUES else RetentionPolicy.LIMITS
        assert info.config.retention == want
    for spec in CONSUMERS:
        info = await js.consumer_info(spec.stream, spec.name)
        # JetStream never gives up delivering on its own: jetrl.bus.retry counts real failures
        assert (info.config.ack_wait, info.config.max_deliver) == (spec.ack_wait_s, -1)


async def test_declare_updates_a_changed_consumer(nc):
    js = nc.jetstream()
    await declare(js, replicas=1)
    changed = ConsumerSpec("scheduler-rollouts", Kind.ROLLOUTS, ack_wait_s=7.0, max_failures=2)
    await declare(js, consumers=(changed,), replicas=1)
    info = await js.consumer_info(changed.stream, changed.name)
    assert (info.config.ack_wait, info.config.max_deliver) == (7.0, -1)
