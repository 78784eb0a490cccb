"""What a consumer does when a handler does not succeed: wait, retry, or give up.

Three outcomes, told apart here once for every consumer:

- **Wait** — the event is fine but early: an earlier event must be handled first (the batch
  before it, the run being activated after a restart). It is retried after a short delay, never
  counted toward the dead letter, never logged as an error.
- **Transient** — the infrastructure is away (Postgres restarting, NATS reconnecting, a peer
  service UNAVAILABLE). Retried with backoff for as long as it takes, also never counted: an event
  with a deterministic id that was dead-lettered for an outage could never be published again.
- **Failure** — the handler raised anything else. Counted per message; after `max_failures`
  the event is dead-lettered with the reason and the cause `failed`, which the scheduler turns
  into a FAILED run (the event can never come again, so waiting would be a stall).

Failures are counted here, in memory, rather than by JetStream's delivery count, because waits
and outages are redeliveries too; the durable consumers therefore have no `max_deliver` of their
own (JetStream would stop delivering silently, a stall). A restarted process counts afresh.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import grpc
import nats.errors
import nats.js.errors

__all__ = ["Wait", "FailureCounter", "is_transient", "wait_delay", "failure_delay", "CAUSE_INVALID", "CAUSE_FAILED"]

MAX_FAILURE_DELAY_S = 60.0
MAX_WAIT_DELAY_S = 5.0
# the cause of a dead letter (header DLQ_CAUSE): refused as malformed or wrong, or failed for good
CAUSE_INVALID = "invalid"
CAUSE_FAILED = "failed"
_TRANSIENT_GRPC = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class Wait(Exception):
    """The event comes early: handle it again once the event it depends on was handled."""


def is_transient(exc: BaseException) -> bool:
    """Is this the infrastructure being away (retry until it is back), not a fault of the event?"""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(exc, (OperationalError, InterfaceError)):
        return True  # connection lost, server restarting, lock timeout, deadlock victim
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in _TRANSIENT_GRPC
    if isinstance(
        exc,
        (
            nats.errors.ConnectionClosedError,
            nats.errors.ConnectionReconnectingError,
            nats.errors.TimeoutError,
            nats.errors.NoRespondersError,
            # a stream electing its leader (a cluster lost a server): nats-py's word for the
            # NoRespondersError of a JetStream publish; every stream is declared before use
            nats.js.errors.NoStreamResponseError,
            nats.errors.OutboundBufferLimitError,
            nats.errors.StaleConnectionError,
        ),
    ):
        return True
    return isinstance(exc, (ConnectionError, asyncio.TimeoutError, TimeoutError))


def wait_delay(num_delivered: int, base: float) -> float:
    """Backoff of a wait or an outage: short, so the run moves on soon after the cause is gone."""
    return min(base * 2 ** max(num_delivered - 1, 0), MAX_WAIT_DELAY_S)


def failure_delay(failures: int, base: float) -> float:
    return min(base * 2 ** max(failures - 1, 0), MAX_FAILURE_DELAY_S)


class FailureCounter:
    """Failures per message (consumer, stream sequence), forgotten once the message is settled.

    Bounded: a message another replica settled is never forgotten here, so the oldest entries go.
    """

    def __init__(self, capacity: int = 10_000):
        self._counts: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._capacity = capacity

    def fail(self, consumer: str, seq: int) -> int:
        key = (consumer, seq)
        self._counts[key] = self._counts.pop(key, 0) + 1
        while len(self._counts) > self._capacity:
            self._counts.popitem(last=False)
        return self._counts[key]

    def settle(self, consumer: str, seq: int) -> None:
        self._counts.pop((consumer, seq), None)
