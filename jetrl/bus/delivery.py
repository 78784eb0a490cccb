"""What a consumed message is to a handler: its Delivery, its decoded event, its CONSUMER span.

Shared by the durable consumers (jetrl.bus.consume) and the broadcast followers (jetrl.bus.follow).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from jetrl.bus.publish import MSG_ID, messaging_attributes
from jetrl.bus.topology import Kind
from jetrl.bus.validate import decode
from jetrl.telemetry import extract, tracer

__all__ = ["Delivery", "Handler", "BatchHandler", "delivery_of", "decode_payload", "consumer_span"]


@dataclass(frozen=True)
class Delivery:
    """Where a message came from; `headers` are its NATS headers (trace context, message id)."""

    subject: str
    run_id: str
    kind: Kind
    headers: dict[str, str]
    num_delivered: int
    stream_seq: int


# the message is the decoded event, or the raw payload bytes for Kind.DLQ
Handler = Callable[[Any, Delivery], Awaitable[None]]
# consume_together's handler: every (event, delivery) of a fetch; returns {index: reason} of refused ones
BatchHandler = Callable[[list[tuple[Any, Delivery]]], Awaitable[dict[int, str]]]


def delivery_of(msg: Msg, kind: Kind) -> Delivery:
    meta = msg.metadata
    # the stream only holds jetrl.<token>.<kind>, so the run token is always there
    return Delivery(
        msg.subject, msg.subject.split(".")[1], kind, dict(msg.headers or {}), meta.num_delivered, meta.sequence.stream
    )


def decode_payload(kind: Kind, data: bytes, run_id: str) -> Any:
    return data if kind is Kind.DLQ else decode(kind, data, run_id)


def consumer_span(delivery: Delivery, consumer: str | None = None):
    attributes: dict[str, AttributeValue] = {
        **messaging_attributes(delivery.subject, delivery.headers.get(MSG_ID, "")),
        "messaging.operation.type": "process",
        "messaging.nats.stream.sequence": delivery.stream_seq,
        "messaging.nats.num_delivered": delivery.num_delivered,
    }
    if consumer:
        attributes["messaging.consumer.group.name"] = consumer
    return tracer.start_as_current_span(
        f"{delivery.kind} process",
        context=extract(delivery.headers),
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
    )
