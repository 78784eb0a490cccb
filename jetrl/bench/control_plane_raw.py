"""Raw JetStream on the private stack's own nats-server, right after `jetrl bench control-plane`'s
runs: how fast messages the size of a Sample move with nothing else to do, so that the
pipeline's samples/s can be read as a share of it (a ratio that should hold across machines).

The payload is a real Sample of the bench's runs, the first of the last Rollout a rollout worker
published (the rollouts stream keeps them: limits retention), without the pipeline's headers. A
Rollout carries a whole task's samples, so the raw rate is per Sample-sized message: the rate the
pipeline would have if every sample were its own message, which is what samples/s is read against.
Publishing keeps `window` publishes in flight, each acked by the stream (nats-py's
publish_async); consuming is a durable pull consumer, as the services use, fetching `window` at
a time and acking each message, as they do. The stream (BENCHRAW on benchraw.>, file storage like
the pipeline's) is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from jetrl.bus.connection import connect
from jetrl.bus.topology import Kind, stream_name, subject
from jetrl.config import Settings
from jetrl.v1 import events_pb2

__all__ = ["RawRates", "raw_jetstream"]

STREAM, SUBJECT, CONSUMER = "BENCHRAW", "benchraw.sample", "benchraw"
ACK_TIMEOUT_S = 60.0  # every publish acked, every message fetched, within this


@dataclass(frozen=True)
class RawRates:
    sample_bytes: int  # the serialized Sample's ByteSize
    messages: int
    publish_s: float
    consume_s: float

    @property
    def publish_rate(self) -> float:
        return self.messages / self.publish_s

    @property
    def consume_rate(self) -> float:
        return self.messages / self.consume_s


async def _real_sample(js, run_ids: list[str]) -> bytes:
    """The first Sample of the last Rollout published by the first of `run_ids` that has one."""
    for run_id in run_ids:
        try:
            last = await js.get_last_msg(stream_name(Kind.ROLLOUTS), subject(run_id, Kind.ROLLOUTS))
            return events_pb2.Rollout.FromString(last.data).samples[0].SerializeToString()
        except NotFoundError:
            continue
    raise SystemExit(
        f"no rollout worker published a Sample in runs {', '.join(run_ids)}: nothing to size raw JetStream by"
    )


async def _publish(js, payload: bytes, messages: int) -> float:
    """Seconds to publish `messages` copies, acks included (publish_async bounds those in flight)."""
    began = time.perf_counter()
    futures = [await js.publish_async(SUBJECT, payload) for _ in range(messages)]
    await asyncio.wait_for(asyncio.gather(*futures), ACK_TIMEOUT_S)
    return time.perf_counter() - began


async def _consume(nc, js, messages: int, window: int) -> float:
    """Seconds to fetch and ack `messages` through a durable pull consumer, acks flushed."""
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT))
    sub = await js.pull_subscribe_bind(durable=CONSUMER, stream=STREAM)
    began, got = time.perf_counter(), 0
    while got < messages:
        for msg in await sub.fetch(min(window, messages - got), timeout=ACK_TIMEOUT_S):
            await msg.ack()
            got += 1
    await nc.flush()
    elapsed = time.perf_counter() - began
    await sub.unsubscribe()
    return elapsed


async def _measure(settings: Settings, run_ids: list[str], messages: int, window: int) -> RawRates:
    # as the stack's admin user (isolated_settings): the bench makes and deletes a stream of its own
    nc = await connect(settings, "bench-raw")
    try:
        js = nc.jetstream(publish_async_max_pending=window)
        payload = await _real_sample(js, run_ids)
        await js.add_stream(StreamConfig(name=STREAM, subjects=["benchraw.>"], storage=StorageType.FILE))
        try:
            publish_s = await _publish(js, payload, messages)
            consume_s = await _consume(nc, js, messages, window)
        finally:
            await js.delete_stream(STREAM)
    finally:
        await nc.close()
    return RawRates(len(payload), messages, publish_s, consume_s)


def raw_jetstream(settings: Settings, run_ids: list[str], messages: int, window: int) -> RawRates:
    """Publish then pull-consume `messages` copies of a real Sample of `run_ids` on the broker of
    `settings`, `window` in flight (publish) or per fetch (consume)."""
    return asyncio.run(_measure(settings, run_ids, messages, window))
