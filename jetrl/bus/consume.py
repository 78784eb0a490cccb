"""Consuming work: at-least-once from durable consumers (broadcasts: jetrl.bus.follow).

`consume` acks a message only after the handler returned, i.e. after its side effects are
committed; handlers are idempotent, so a redelivery after a crash changes nothing. Nothing is
dropped silently: a malformed event, or one whose handler keeps failing, goes to the run's
dead-letter subject with the reason before it is acked. A handler that must wait for an earlier
event, or for Postgres or NATS to come back, is retried without end and without spending the
failures that lead there (jetrl.bus.retry).

Every handled event is counted here by consumer and outcome (jetrl.metrics), and while the
process exports metrics, each bound consumer's lag (and its work queue's depth) is polled
(jetrl.bus.levels).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import trace

from jetrl.bus.dead_letter import failures, give_up, not_done
from jetrl.bus.delivery import BatchHandler, Delivery, Handler, consumer_span, decode_payload, delivery_of
from jetrl.bus.levels import poll_levels
from jetrl.bus.refusals import raise_if_refused
from jetrl.bus.retry import CAUSE_INVALID, Wait, is_transient
from jetrl.bus.topology import ConsumerSpec
from jetrl.bus.validate import InvalidEvent
from jetrl.logs import log_fields
from jetrl.metrics import EVENTS_HANDLED, Outcome, exporting
from jetrl.telemetry import link_from, tracer

log = logging.getLogger(__name__)


async def consume(
    js: JetStreamContext,
    consumer: ConsumerSpec,
    handler: Handler,
    stop: asyncio.Event,
    *,
    batch: int = 16,
    concurrency: int = 1,
    fetch_timeout: float = 1.0,
    retry_delay: float = 1.0,
) -> None:
    """Handle messages of a declared durable consumer until `stop` is set, one by one or, with
    `concurrency` > 1, up to that many handlers at once.

    A failed handler's message is retried after `retry_delay`·2^(n-1) s (capped at a minute);
    on its `max_failures`-th failure it is dead-lettered; waits and outages are retried for as
    long as they last (jetrl.bus.retry). Returns within about `fetch_timeout`
    of `stop`, once the messages at hand are finished; the rest of a fetched batch is handed back.
    With concurrency, only as many messages are fetched as there are free handler slots (so
    `batch` does not apply) and a slot is refilled as soon as its handler returns.
    """
    if concurrency > 1:
        await _consume_concurrently(js, consumer, handler, stop, concurrency, fetch_timeout, retry_delay)
        return

    async def process(pending: list[Msg]) -> None:
        while pending and not stop.is_set():
            await _process(js, consumer, pending[0], handler, retry_delay)
            pending.pop(0)

    await _fetch_loop(js, consumer, stop, batch, fetch_timeout, process)


async def consume_together(
    js: JetStreamContext,
    consumer: ConsumerSpec,
    handler: BatchHandler,
    stop: asyncio.Event,
    *,
    batch: int = 64,
    fetch_timeout: float = 1.0,
    retry_delay: float = 1.0,
) -> None:
    """Like `consume`, but each fetch goes to the handler in one call, to commit in one transaction.

    The handler gets the well-formed (event, delivery) pairs and returns {index: reason} for
    those it refuses: they are dead-lettered, the others acked. If it raises, every message of
    the call is retried (or dead-lettered at its max_failures), exactly as with `consume`.
    """

    async def process(pending: list[Msg]) -> None:
        await _process_together(js, consumer, list(pending), handler, retry_delay)
        pending.clear()

    await _fetch_loop(js, consumer, stop, batch, fetch_timeout, process)


async def _fetch_loop(
    js,
    consumer: ConsumerSpec,
    stop: asyncio.Event,
    batch: int,
    fetch_timeout: float,
    process: Callable[[list[Msg]], Awaitable[None]],
) -> None:
    pending: list[Msg] = []  # fetched, not yet acked: all kept alive, since they wait their turn
    async with _bound(js, consumer, pending) as sub:
        while not stop.is_set():
            pending[:] = await _fetch(js, sub, consumer, batch, fetch_timeout)
            if not pending:
                continue
            await process(pending)
            for msg in pending:
                await msg.nak()  # another replica can take it now instead of after ack_wait
            pending.clear()


async def _consume_concurrently(
    js,
    consumer: ConsumerSpec,
    handler: Handler,
    stop: asyncio.Event,
    concurrency: int,
    fetch_timeout: float,
    retry_delay: float,
) -> None:
    in_flight: list[Msg] = []  # started, not yet acked: kept alive
    running: set[asyncio.Task] = set()

    async def handle(msg: Msg) -> None:
        try:
            await _process(js, consumer, msg, handler, retry_delay)
        finally:
            in_flight.remove(msg)

    def reap(done) -> None:
        for task in done:
            running.discard(task)
            task.result()  # _process handles handler errors; what escapes it (a failed ack) stops us, as sequentially

    async with _bound(js, consumer, in_flight) as sub:
        try:
            while not stop.is_set():
                if len(running) >= concurrency:
                    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    reap(done)
                    continue
                for msg in await _fetch(js, sub, consumer, concurrency - len(running), fetch_timeout):
                    # nats-py may hand over more than asked (late arrivals of an earlier fetch)
                    if stop.is_set() or len(running) >= concurrency:
                        await msg.nak()  # not started: another replica (or we, later) can take it now
                        continue
                    in_flight.append(msg)
                    running.add(asyncio.create_task(handle(msg)))
                reap([task for task in running if task.done()])
            await asyncio.gather(*running)  # stopping: finish what was started
        finally:
            for task in running:
                task.cancel()  # only left on an error or a cancellation: unacked, they come back later


@asynccontextmanager
async def _bound(js, consumer: ConsumerSpec, alive: list[Msg]) -> AsyncIterator:
    """A pull subscription bound to the declared durable, keeping the messages in `alive` alive."""
    # fail loudly on a missing durable: binding would otherwise just time out forever
    await js.consumer_info(consumer.stream, consumer.name)
    sub = await js.pull_subscribe_bind(durable=consumer.name, stream=consumer.stream)
    helpers = [asyncio.create_task(_keep_alive(alive, consumer.ack_wait_s / 3))]
    if exporting():
        helpers.append(asyncio.create_task(poll_levels(js, consumer)))
    try:
        yield sub
    finally:
        for task in helpers:
            task.cancel()
        await sub.unsubscribe()


async def _fetch(js: JetStreamContext, sub, consumer: ConsumerSpec, n: int, timeout: float) -> list[Msg]:
    """Up to `n` messages; none when there were none within `timeout` or the fetch failed.
    PermissionDenied when the broker refuses this user the fetch: it would only time out."""
    try:
        return await sub.fetch(n, timeout=timeout)
    except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either
        raise_if_refused(js, consumer.fetch_subject)
        return []
    except nats.errors.Error as exc:
        # a reconnect or a consumer leader change: wait a moment and fetch again
        log.warning("fetch failed", extra=log_fields(consumer=consumer.name, error=repr(exc)))
        await asyncio.sleep(min(timeout, 1.0))
        return []


async def _process(
    js: JetStreamContext, consumer: ConsumerSpec, msg: Msg, handler: Handler, retry_delay: float
) -> None:
    delivery = delivery_of(msg, consumer.kind)
    with consumer_span(delivery, consumer.name) as span:
        try:
            await handler(decode_payload(consumer.kind, msg.data, delivery.run_id), delivery)
        except InvalidEvent as exc:
            span.set_status(trace.StatusCode.ERROR, str(exc))
            _count(consumer, Outcome.INVALID)
            await give_up(js, msg, delivery, str(exc), retry_delay, CAUSE_INVALID)
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR, repr(exc))
            _count(consumer, _outcome_of(exc))
            await not_done(js, consumer, [(delivery, msg)], exc, retry_delay)
        else:
            failures.settle(consumer.name, delivery.stream_seq)
            _count(consumer, Outcome.OK)
            await msg.ack()


async def _process_together(
    js: JetStreamContext, consumer: ConsumerSpec, msgs: list[Msg], handler: BatchHandler, retry_delay: float
) -> None:
    items: list[tuple[Any, Delivery, Msg]] = []
    for msg in msgs:
        delivery = delivery_of(msg, consumer.kind)
        try:
            items.append((decode_payload(consumer.kind, msg.data, delivery.run_id), delivery, msg))
        except InvalidEvent as exc:
            _count(consumer, Outcome.INVALID)
            with consumer_span(delivery, consumer.name):
                await give_up(js, msg, delivery, str(exc), retry_delay, CAUSE_INVALID)
    if not items:
        return
    # one step consumes many messages: its span links to each producer's context
    links = [link for _, d, _ in items if (link := link_from(d.headers)) is not None]
    with tracer.start_as_current_span(
        f"{consumer.kind} process",
        kind=trace.SpanKind.CONSUMER,
        links=links,
        attributes={"messaging.batch.message_count": len(items), "messaging.consumer.group.name": consumer.name},
    ) as span:
        try:
            rejected = await handler([(event, delivery) for event, delivery, _ in items])
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR, repr(exc))
            if len(items) > 1 and not isinstance(exc, Wait) and not is_transient(exc):
                # one event may be what fails the whole call: each one alone, so it fails (and is
                # dead-lettered) by itself and the others of the fetch, of any run, go through
                for _, _, msg in items:
                    await _process_together(js, consumer, [msg], handler, retry_delay)
                return
            _count(consumer, _outcome_of(exc), len(items))
            await not_done(js, consumer, [(d, m) for _, d, m in items], exc, retry_delay)
            return
    _count(consumer, Outcome.INVALID, len(rejected))
    _count(consumer, Outcome.OK, len(items) - len(rejected))
    for i, (_, delivery, msg) in enumerate(items):
        failures.settle(consumer.name, delivery.stream_seq)
        if i in rejected:
            await give_up(js, msg, delivery, rejected[i], retry_delay, CAUSE_INVALID)
        else:
            await msg.ack()


async def _keep_alive(pending: list[Msg], interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        for msg in list(pending):
            try:
                await msg.in_progress()
            except nats.errors.Error:
                pass  # connection trouble: the ack wait may lapse and the message come back


def _count(consumer: ConsumerSpec, outcome: str, n: int = 1) -> None:
    if n:
        EVENTS_HANDLED.add(n, {"consumer": consumer.name, "outcome": outcome})


def _outcome_of(exc: Exception) -> str:
    """A handler's exception as an outcome, as not_done treats it (a wait is no failure)."""
    return Outcome.WAITING if isinstance(exc, Wait) or is_transient(exc) else Outcome.FAILED
