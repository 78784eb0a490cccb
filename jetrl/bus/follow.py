"""Following a broadcast kind (weights, teacher, control): every replica sees every message."""

from __future__ import annotations

import asyncio
import logging

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from jetrl.bus.delivery import Handler, consumer_span, decode_payload, delivery_of
from jetrl.bus.topology import PREFIX, Kind, stream_name, subject
from jetrl.bus.validate import InvalidEvent
from jetrl.logs import log_fields

__all__ = ["follow"]

log = logging.getLogger(__name__)


async def follow(
    js: JetStreamContext,
    kind: Kind,
    handler: Handler,
    stop: asyncio.Event,
    *,
    run_id: str = "*",
    last_per_subject: bool = True,
    fetch_timeout: float = 1.0,
) -> None:
    """Hand every message of a broadcast kind (weights, control) to `handler` until `stop`.

    An ordered ephemeral consumer: each replica sees every message, in order, starting from
    the last message per run when `last_per_subject` (else only new ones). Nothing is acked or
    redelivered: malformed messages and handler errors are logged and skipped (the scheduler's
    durable consumer is the one that dead-letters them).
    """
    kind = Kind(kind)
    filter_subject = f"{PREFIX}.*.{kind}" if run_id == "*" else subject(run_id, kind)
    policy = DeliverPolicy.LAST_PER_SUBJECT if last_per_subject else DeliverPolicy.NEW
    sub = await js.subscribe(filter_subject, stream=stream_name(kind), ordered_consumer=True, deliver_policy=policy)
    try:
        while not stop.is_set():
            try:
                msg = await sub.next_msg(timeout=fetch_timeout)
            except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either
                continue
            delivery = delivery_of(msg, kind)
            with consumer_span(delivery):
                try:
                    await handler(decode_payload(kind, msg.data, delivery.run_id), delivery)
                except InvalidEvent as exc:
                    log.warning("skipped malformed event", extra=log_fields(subject=msg.subject, reason=str(exc)))
                except Exception:
                    log.exception("follow handler failed", extra=log_fields(subject=msg.subject))
    finally:
        await sub.unsubscribe()
