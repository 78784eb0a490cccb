"""Failed messages: wait and retry, or dead-letter them to the run's DLQ subject with the reason.

`consume` (jetrl.bus.consume) hands here every message whose handler raised or that it refuses;
how long to wait and what is transient is jetrl.bus.retry's.
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from jetrl.bus.delivery import Delivery
from jetrl.bus.publish import MSG_ID
from jetrl.bus.retry import CAUSE_FAILED, FailureCounter, Wait, failure_delay, is_transient, wait_delay
from jetrl.bus.topology import PREFIX, ConsumerSpec, Kind
from jetrl.ids import dead_letter_msg_id
from jetrl.logs import log_fields

log = logging.getLogger(__name__)

DLQ_REASON = "Jetrl-Dlq-Reason"
DLQ_SUBJECT = "Jetrl-Dlq-Subject"
DLQ_SEQ = "Jetrl-Dlq-Seq"
DLQ_CAUSE = "Jetrl-Dlq-Cause"  # retry.CAUSE_INVALID or retry.CAUSE_FAILED
# the message id the event was published under: JetStream drops another event with that id
# for its duplicate window, so a refused event may have taken the id of one a run needs
DLQ_MSG_ID = "Jetrl-Dlq-Msg-Id"
failures = FailureCounter()


async def not_done(
    js: JetStreamContext,
    consumer: ConsumerSpec,
    messages: list[tuple[Delivery, Msg]],
    exc: Exception,
    retry_delay: float,
) -> None:
    """A handler raised for these messages: wait, retry, or (after max_failures) dead-letter them."""
    if isinstance(exc, Wait) or is_transient(exc):
        # not the event's fault: retried for as long as it takes, never counted, never an error
        level = logging.DEBUG if isinstance(exc, Wait) else logging.WARNING
        log.log(
            level,
            "waiting",
            extra=log_fields(
                consumer=consumer.name, messages=len(messages), reason=f"{type(exc).__name__}: {exc}"[:300]
            ),
        )
        for delivery, msg in messages:
            await msg.nak(delay=wait_delay(delivery.num_delivered, retry_delay))
        return
    log.error("handler failed", exc_info=exc, extra=log_fields(consumer=consumer.name, messages=len(messages)))
    for delivery, msg in messages:
        n = failures.fail(consumer.name, delivery.stream_seq)
        if n >= consumer.max_failures:
            failures.settle(consumer.name, delivery.stream_seq)
            await give_up(
                js, msg, delivery, f"handler failed {n} times: {type(exc).__name__}: {exc}", retry_delay, CAUSE_FAILED
            )
        else:
            await msg.nak(delay=failure_delay(n, retry_delay))


async def give_up(
    js: JetStreamContext, msg: Msg, delivery: Delivery, reason: str, retry_delay: float, cause: str
) -> None:
    """Dead-letter then ack; a dead letter that cannot be handled stays in its stream, logged."""
    if delivery.kind is Kind.DLQ:
        log.error("dead letter not handled", extra=log_fields(seq=delivery.stream_seq, reason=reason))
        await msg.term()
        return
    seq = delivery.stream_seq
    headers = {k: v for k, v in delivery.headers.items() if not k.startswith("Nats-")}
    headers |= {
        DLQ_REASON: " ".join(reason.split())[:2000],  # one header line: no CR/LF
        DLQ_SUBJECT: msg.subject,
        DLQ_SEQ: str(seq),
        DLQ_CAUSE: cause,
        MSG_ID: dead_letter_msg_id(msg.metadata.stream, seq),
    }
    if taken := delivery.headers.get(MSG_ID):
        headers[DLQ_MSG_ID] = taken
    try:
        await js.publish(f"{PREFIX}.{delivery.run_id}.{Kind.DLQ}", msg.data, headers=headers)
    except Exception:
        log.exception("could not dead-letter, will retry", extra=log_fields(subject=msg.subject, seq=seq))
        await msg.nak(delay=retry_delay)
        return
    log.warning("dead-lettered", extra=log_fields(subject=msg.subject, seq=seq, reason=reason))
    await msg.ack()
