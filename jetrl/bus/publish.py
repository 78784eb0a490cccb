"""Publishing an event: validated, traced, deduplicated by message id."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message
from nats.js import JetStreamContext
from nats.js.api import PubAck
from opentelemetry import trace

from jetrl.bus.topology import Kind, subject
from jetrl.bus.validate import InvalidEvent, check
from jetrl.telemetry import inject, tracer

MSG_ID = "Nats-Msg-Id"
TYPE = "Jetrl-Type"


class Unpublishable(ValueError):
    """A service made an invalid event. Not an InvalidEvent on purpose: inside a handler that would
    blame (and dead-letter as malformed) the event being handled, not the code that failed it, so
    it counts as a failure instead and, for good, fails the run with this message."""


def messaging_attributes(subj: str, msg_id: str) -> dict[str, str]:
    """OpenTelemetry messaging semantic-convention attributes of one NATS message."""
    return {"messaging.system": "nats", "messaging.destination.name": subj, "messaging.message.id": msg_id}


async def publish(
    js: JetStreamContext,
    run_id: str,
    kind: Kind,
    message: Message,
    *,
    msg_id: str,
    links: Sequence[trace.Link] | None = None,
) -> PubAck:
    """Publish `message` on `jetrl.<run_id>.<kind>` and wait for the stream to store it.

    `msg_id` must be deterministic (e.g. the group id): JetStream drops a second publish with the
    same id within the duplicate window, so a producer restarted mid-step can simply publish
    again; the returned PubAck's `duplicate` says when that happened. An invalid message raises
    Unpublishable before anything is sent.
    """
    if not msg_id:
        raise ValueError("msg_id is required: it is what makes a retried publish harmless")
    kind = Kind(kind)
    try:
        check(kind, message, run_id)
    except InvalidEvent as exc:
        raise Unpublishable(f"refusing to publish an invalid {kind} event: {exc}") from None
    subj = subject(run_id, kind)
    with tracer.start_as_current_span(
        f"{kind} publish",
        kind=trace.SpanKind.PRODUCER,
        links=[link for link in links or () if link is not None],
        attributes={**messaging_attributes(subj, msg_id), "messaging.operation.type": "send"},
    ) as span:
        headers = inject({MSG_ID: msg_id, TYPE: message.DESCRIPTOR.full_name})
        ack = await js.publish(subj, message.SerializeToString(), headers=headers)
        span.set_attribute("messaging.nats.stream.sequence", ack.seq)
        if ack.duplicate:
            span.set_attribute("messaging.nats.duplicate", True)
        return ack
