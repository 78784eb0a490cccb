"""How far behind each durable consumer is, for Prometheus (jetrl.metrics): polled from JetStream
while a consumer is bound (jetrl.bus.consume), by each service for its own consumers.

Lag is what the consumer has not acked yet: messages pending delivery plus those delivered and
unacked. A work queue's depth is the messages its stream holds (each leaves once acked).
"""

from __future__ import annotations

import asyncio

import nats.errors
from nats.js import JetStreamContext

from jetrl.bus.topology import WORK_QUEUES, ConsumerSpec
from jetrl.metrics import Metric, levels

LEVELS_EVERY_S = 10.0  # about Prometheus's scrape interval; two info requests per consumer each time


async def poll_levels(js: JetStreamContext, consumer: ConsumerSpec) -> None:
    """Export the consumer's lag (pending + delivered but unacked) and, for a work queue, its
    stream's depth, every LEVELS_EVERY_S until cancelled."""
    try:
        while True:
            try:
                info = await js.consumer_info(consumer.stream, consumer.name)
                lag = (info.num_pending or 0) + (info.num_ack_pending or 0)
                levels.set(Metric.CONSUMER_LAG, "consumer", consumer.name, lag)
                if consumer.kind in WORK_QUEUES:
                    state = (await js.stream_info(consumer.stream)).state
                    levels.set(Metric.QUEUE_DEPTH, "stream", consumer.stream, state.messages)
            except (nats.errors.Error, TimeoutError):
                pass  # the broker is away: the fetch loop says so; the levels are polled again next time
            await asyncio.sleep(LEVELS_EVERY_S)
    finally:
        # stopped here: no stale level (another replica still exports its own)
        levels.drop(Metric.CONSUMER_LAG, "consumer", consumer.name)
        levels.drop(Metric.QUEUE_DEPTH, "stream", consumer.stream)
