import asyncio
import time
from contextlib import asynccontextmanager

import pytest
from sqlalchemy.exc import OperationalError

from jetrl.bus import (
    CAUSE_FAILED,
    DLQ_CAUSE,
    DLQ_MSG_ID,
    DLQ_REASON,
    DLQ_SEQ,
    DLQ_SUBJECT,
    ROLLOUT_WORKERS,
    SCHEDULER_DLQ,
    ConsumerSpec,
    InvalidEvent,
    Kind,
    Wait,
    connect,
    consume,
    consume_together,
    declare,
    follow,
    publish,
    stream_name,
)
from jetrl.bus.publish import Unpublishable
from jetrl.config import Settings
from jetrl.v1 import events_pb2 as ev

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@asynccontextmanager
async def consuming(js, spec, handler, **kwargs):
    """Run consume() in the background; on exit stop it and wait for it to return."""
    stop = asyncio.Event()
    task = asyncio.create_task(consume(js, spec, handler, stop, fetch_timeout=0.2, retry_delay=0.05, **kwargs))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def until(predicate, timeout: float = 5.0) -> None:
    """Wait until predicate() (a value or an awaitable) is true."""
    deadline = time.monotonic() + timeout
    while not await _value(predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _value(x):
    return await x if asyncio.iscoroutine(x) else x


async def drained(js, kind: Kind) -> bool:
    return (await js.stream_info(stream_name(kind))).state.messages == 0


async def drained_consumer(js, spec) -> bool:
    info = await js.consumer_info(spec.stream, spec.name)
    return info.num_ack_pending == 0 and info.num_pending == 0


def task(make_event, group_id: str, run_id: str = "run1") -> ev.Task:
    t = make_event(Kind.TASKS, run_id)
    t.group_id = group_id
    return t


async def dead_letters(js, count: int) -> list:
    got = []

    async def handler(payload, delivery):
        got.append((payload, delivery))

    async with consuming(js, SCHEDULER_DLQ, handler):
        await until(lambda: len(got) >= count)
    return got


async def test_publish_sets_headers_and_dedupes_by_msg_id(js, make_event):
    first = await publish(js, "run1", Kind.TASKS, task(make_event, "g0"), msg_id="g0")
    again = await publish(js, "run1", Kind.TASKS, task(make_event, "g0"), msg_id="g0")
    assert not first.duplicate and again.duplicate and again.seq == first.seq
    stored = await js.get_msg(stream_name(Kind.TASKS), first.seq)
    assert stored.subject == "jetrl.run1.tasks"
    assert stored.headers["Nats-Msg-Id"] == "g0" and stored.headers["Jetrl-Type"] == "jetrl.v1.Task"
    assert (await js.stream_info(stream_name(Kind.TASKS))).state.messages == 1


async def test_publish_refuses_invalid_events(js, make_event):
    bad = task(make_event, "")
    with pytest.raises(Unpublishable, match="group_id is empty"):
        await publish(js, "run1", Kind.TASKS, bad, msg_id="x")
    with pytest.raises(Unpublishable, match="does not match"):
        await publish(js, "run2", Kind.TASKS, task(make_event, "g0"), msg_id="x")
    assert await drained(js, Kind.TASKS)


async def test_success_is_acked_once(js, make_event):
    got = []

    async def handler(message, delivery):
        got.append((message.group_id, delivery.run_id, delivery.kind, delivery.num_delivered))

    async with consuming(js, ROLLOUT_WORKERS, handler):
        for i in range(3):
            await publish(js, "run1", Kind.TASKS, task(make_event, f"g{i}"), msg_id=f"g{i}")
        await until(lambda: len(got) == 3)
    assert got == [(f"g{i}", "run1", Kind.TASKS, 1) for i in range(3)]
    info = await js.consumer_info(ROLLOUT_WORKERS.stream, ROLLOUT_WORKERS.name)
    assert info.num_ack_pending == 0 and info.num_redelivered == 0
    await until(lambda: drained(js, Kind.TASKS))  # work queue: an acked message is gone


async def test_failed_handler_is_retried_then_succeeds(js, make_event):
    attempts = []

    async def handler(message, delivery):
        attempts.append(delivery.num_delivered)
        if delivery.num_delivered < 3:
            raise RuntimeError("transient")

    await publish(js, "run1", Kind.TASKS, task(make_event, "g0"), msg_id="g0")
    async with consuming(js, ROLLOUT_WORKERS, handler):
        await until(lambda: attempts == [1, 2, 3])
        await until(lambda: drained(js, Kind.TASKS))


async def test_a_message_that_keeps_failing_is_dead_lettered(js, make_event):
    spec = ConsumerSpec("test-failing", Kind.ROLLOUTS, ack_wait_s=5.0, max_failures=3)
    await declare(js, consumers=(spec,), replicas=1)
    attempts = []

    async def handler(message, delivery):
        attempts.append(delivery.num_delivered)
        raise RuntimeError("boom")

    ack = await publish(js, "run1", Kind.ROLLOUTS, make_event(Kind.ROLLOUTS, "run1"), msg_id="s0")
    async with consuming(js, spec, handler):
        [(payload, delivery)] = await dead_letters(js, 1)
    assert attempts == [1, 2, 3]
    assert delivery.subject == "jetrl.run1.dlq" and delivery.run_id == "run1"
    assert delivery.headers[DLQ_REASON] == "handler failed 3 times: RuntimeError: boom"
    assert delivery.headers[DLQ_CAUSE] == CAUSE_FAILED
    assert delivery.headers[DLQ_SUBJECT] == "jetrl.run1.rollouts" and delivery.headers[DLQ_SEQ] == str(ack.seq)
    assert ev.Rollout.FromString(payload) == make_event(Kind.ROLLOUTS, "run1")
    assert (await js.consumer_info(spec.stream, spec.name)).num_ack_pending == 0


@pytest.mark.parametrize(
    "early",
    [
        Wait("the batch before it comes first"),
        OperationalError("SELECT 1", {}, ConnectionRefusedError("postgres is restarting")),
    ],
    ids=["wait", "outage"],
)
async def test_waiting_and_outages_never_spend_the_failures_that_dead_letter(js, make_event, early):
    # twice max_failures early answers, then success: acked, never dead-lettered
    spec = ConsumerSpec("test-waiting", Kind.ROLLOUTS, ack_wait_s=5.0, max_failures=2)
    await declare(js, consumers=(spec,), replicas=1)
    attempts = []

    async def handler(message, delivery):
        attempts.append(delivery.num_delivered)
        if len(attempts) <= 4:
            raise early

    await publish(js, "run1", Kind.ROLLOUTS, make_event(Kind.ROLLOUTS, "run1"), msg_id="s0")
    async with consuming(js, spec, handler):
        await until(lambda: len(attempts) == 5)
        await until(lambda: drained_consumer(js, spec))
    assert attempts == [1, 2, 3, 4, 5]
    assert await drained(js, Kind.DLQ)


async def test_malformed_and_wrong_run_events_are_dead_lettered_and_the_consumer_goes_on(js, make_event):
    handled = []

    async def handler(message, delivery):
        if message.group_id == "rejected":
            raise InvalidEvent("handler says no")
        handled.append(message.group_id)

    await js.publish("jetrl.run1.tasks", b"\xff\xff garbage", headers={"traceparent": TRACEPARENT})
    await js.publish("jetrl.run1.tasks", task(make_event, "g0", run_id="other").SerializeToString())
    await publish(js, "run1", Kind.TASKS, task(make_event, "rejected"), msg_id="rejected")
    await publish(js, "run1", Kind.TASKS, task(make_event, "good"), msg_id="good")
    async with consuming(js, ROLLOUT_WORKERS, handler):
        letters = await dead_letters(js, 3)
        await until(lambda: handled == ["good"])
    reasons = [d.headers[DLQ_REASON] for _, d in letters]
    assert "not a valid jetrl.v1.Task" in reasons[0]
    assert reasons[1] == "run_id 'other' does not match the subject's run 'run1'"
    assert reasons[2] == "handler says no"
    # the refused event's message id goes with it: the scheduler can tell a run's id was taken
    assert [d.headers.get(DLQ_MSG_ID) for _, d in letters] == [None, None, "rejected"]
    assert letters[0][0] == b"\xff\xff garbage" and letters[0][1].headers["traceparent"] == TRACEPARENT
    await until(lambda: drained(js, Kind.TASKS))


async def test_replicas_of_one_durable_split_the_work(js, nats_url, make_event):
    other = await connect(Settings(nats_url=nats_url), "test-replica")
    handled: dict[str, list[str]] = {"a": [], "b": []}

    def handler_for(name):
        async def handler(message, delivery):
            await asyncio.sleep(0.01)
            handled[name].append(message.group_id)

        return handler

    try:
        async with (
            consuming(js, ROLLOUT_WORKERS, handler_for("a"), batch=1),
            consuming(other.jetstream(), ROLLOUT_WORKERS, handler_for("b"), batch=1),
        ):
            for i in range(40):
                await publish(js, "run1", Kind.TASKS, task(make_event, f"g{i}"), msg_id=f"g{i}")
            await until(lambda: len(handled["a"]) + len(handled["b"]) >= 40)
            await asyncio.sleep(0.2)  # a duplicate delivery would show up here
    finally:
        await other.close()
    assert sorted(handled["a"] + handled["b"]) == sorted(f"g{i}" for i in range(40))
    assert handled["a"] and handled["b"]


async def test_stop_returns_promptly_and_hands_back_the_rest_of_the_batch(js, make_event):
    stop = asyncio.Event()
    seen = []

    async def handler(message, delivery):
        seen.append(message.group_id)
        stop.set()  # stop while the first message of the batch is at hand

    for i in range(3):
        await publish(js, "run1", Kind.TASKS, task(make_event, f"g{i}"), msg_id=f"g{i}")
    await asyncio.wait_for(consume(js, ROLLOUT_WORKERS, handler, stop, fetch_timeout=0.2), 2)
    assert seen == ["g0"]
    # the two others were handed back (nak), not left to wait out the 60 s ack wait
    async with consuming(js, ROLLOUT_WORKERS, handler):
        await until(lambda: len(seen) == 3, timeout=3)

    idle = asyncio.Event()
    started = time.monotonic()
    runner = asyncio.create_task(consume(js, ROLLOUT_WORKERS, handler, idle, fetch_timeout=0.5))
    await asyncio.sleep(0.1)
    idle.set()
    await asyncio.wait_for(runner, 2)
    assert time.monotonic() - started < 1.5


async def test_a_slow_handler_is_kept_alive(js, make_event):
    spec = ConsumerSpec("test-slow", Kind.CONTROL, ack_wait_s=1.0)
    await declare(js, consumers=(spec,), replicas=1)
    calls = []

    async def handler(message, delivery):
        calls.append(delivery.num_delivered)
        await asyncio.sleep(2.0)  # twice the ack wait

    await publish(js, "run1", Kind.CONTROL, make_event(Kind.CONTROL, "run1"), msg_id="c0")
    async with consuming(js, spec, handler):
        await until(lambda: calls, 2)
        await asyncio.sleep(2.5)
    assert calls == [1]
    assert (await js.consumer_info(spec.stream, spec.name)).num_redelivered == 0


def weights(make_event, run_id: str, version: int) -> ev.WeightsAnnouncement:
    w = make_event(Kind.WEIGHTS, run_id)
    w.version, w.parent_version = version, version - 1
    return w


async def test_follow_starts_from_the_latest_weights_per_run(js, make_event):
    for run_id, version in [("run1", 1), ("run1", 2), ("run2", 1)]:
        await publish(js, run_id, Kind.WEIGHTS, weights(make_event, run_id, version), msg_id=f"{run_id}.v{version}")
    await js.publish("jetrl.run3.weights", b"\xff not an announcement")
    seen = []

    async def handler(message, delivery):
        seen.append((delivery.run_id, message.version))

    stop = asyncio.Event()
    follower = asyncio.create_task(follow(js, Kind.WEIGHTS, handler, stop, fetch_timeout=0.2))
    await until(lambda: len(seen) == 2)
    await publish(js, "run1", Kind.WEIGHTS, weights(make_event, "run1", 3), msg_id="run1.v3")
    await until(lambda: len(seen) == 3)
    stop.set()
    await asyncio.wait_for(follower, 2)
    assert seen == [("run1", 2), ("run2", 1), ("run1", 3)]  # the malformed run3 one was skipped


async def test_consume_together_hands_over_a_fetch_and_dead_letters_what_it_refuses(js, make_event):
    calls = []

    async def handler(items):
        calls.append([message.group_id for message, _ in items])
        if len(calls) == 1:
            raise RuntimeError("database briefly down")  # comes back, one event at a time
        return {i: "refused by the handler" for i, (m, _) in enumerate(items) if m.group_id == "bad"}

    await js.publish("jetrl.run1.tasks", b"\xff\xff garbage")
    for name in ("a", "bad", "c"):
        await publish(js, "run1", Kind.TASKS, task(make_event, name), msg_id=name)
    stop = asyncio.Event()
    worker = asyncio.create_task(
        consume_together(js, ROLLOUT_WORKERS, handler, stop, fetch_timeout=0.2, retry_delay=0.05)
    )
    try:
        letters = await dead_letters(js, 2)
        await until(lambda: drained(js, Kind.TASKS))
    finally:
        stop.set()
        await asyncio.wait_for(worker, 5)
    assert calls[0] == ["a", "bad", "c"] and sorted(sum(calls[1:], [])) == ["a", "bad", "c"]
    reasons = sorted(d.headers[DLQ_REASON] for _, d in letters)
    assert reasons[1] == "refused by the handler" and "not a valid jetrl.v1.Task" in reasons[0]


async def test_one_event_that_fails_a_fetch_fails_alone_and_the_rest_go_through(js, make_event):
    spec = ConsumerSpec("test-poison-fetch", Kind.ROLLOUTS, ack_wait_s=5.0, max_failures=2)
    await declare(js, consumers=(spec,), replicas=1)
    handled = []

    async def handler(items):
        if any(m.samples[0].text == "poison" for m, _ in items):
            raise ValueError("a value the database refuses")  # not transient: the event's own fault
        handled.extend(m.samples[0].text for m, _ in items)
        return {}

    for text in ("a", "poison", "c"):
        rollout = make_event(Kind.ROLLOUTS, "run1")
        rollout.samples[0].text = text
        await publish(js, "run1", Kind.ROLLOUTS, rollout, msg_id=f"poison-fetch-{text}")
    stop = asyncio.Event()
    worker = asyncio.create_task(consume_together(js, spec, handler, stop, fetch_timeout=0.2, retry_delay=0.05))
    try:
        [(payload, letter)] = await dead_letters(js, 1)
        await until(lambda: drained_consumer(js, spec))
    finally:
        stop.set()
        await asyncio.wait_for(worker, 5)
    assert sorted(handled) == ["a", "c"]  # each once, not held back by the poison one
    assert ev.Rollout.FromString(payload).samples[0].text == "poison"
    assert letter.headers[DLQ_REASON] == "handler failed 2 times: ValueError: a value the database refuses"


# ---- consume(concurrency=N) ----------------------------------------------------------------


async def test_concurrent_handlers_overlap_and_only_free_slots_are_fetched(js, make_event):
    started, release = [], asyncio.Event()
    running = most = 0

    async def handler(message, delivery):
        nonlocal running, most
        started.append(message.group_id)
        running += 1
        most = max(most, running)
        await release.wait()  # only returns once three handlers are running at the same time
        running -= 1

    for i in range(5):
        await publish(js, "run1", Kind.TASKS, task(make_event, f"g{i}"), msg_id=f"g{i}")
    async with consuming(js, ROLLOUT_WORKERS, handler, concurrency=3):
        await until(lambda: len(started) == 3)
        await asyncio.sleep(0.3)  # a fourth handler would start here if the slots were not counted
        assert len(started) == 3
        # the other two were never fetched: free for another replica meanwhile
        assert (await js.consumer_info(ROLLOUT_WORKERS.stream, ROLLOUT_WORKERS.name)).num_ack_pending == 3
        release.set()
        await until(lambda: len(started) == 5)
        await until(lambda: drained(js, Kind.TASKS))
    assert most == 3 and sorted(started) == [f"g{i}" for i in range(5)]


async def test_a_free_slot_is_refilled_at_once_not_batch_by_batch(js, make_event):
    release_slow, done = asyncio.Event(), []

    async def handler(message, delivery):
        if message.group_id == "slow":
            await release_slow.wait()
        done.append(message.group_id)

    for name in ("slow", "f0", "f1", "f2"):
        await publish(js, "run1", Kind.TASKS, task(make_event, name), msg_id=name)
    async with consuming(js, ROLLOUT_WORKERS, handler, concurrency=2):
        # all three fast ones go through the second slot while the slow one holds the first
        await until(lambda: done == ["f0", "f1", "f2"])
        release_slow.set()
        await until(lambda: done[-1:] == ["slow"])
        await until(lambda: drained(js, Kind.TASKS))


async def test_a_concurrent_failure_retries_only_that_message(js, make_event):
    deliveries: dict[str, list[int]] = {}

    async def handler(message, delivery):
        deliveries.setdefault(message.group_id, []).append(delivery.num_delivered)
        if message.group_id == "bad" and delivery.num_delivered == 1:
            raise RuntimeError("transient")

    for name in ("g0", "bad", "g1"):
        await publish(js, "run1", Kind.TASKS, task(make_event, name), msg_id=name)
    async with consuming(js, ROLLOUT_WORKERS, handler, concurrency=3):
        await until(lambda: deliveries.get("bad") == [1, 2])
        await until(lambda: drained(js, Kind.TASKS))
    assert deliveries == {"g0": [1], "bad": [1, 2], "g1": [1]}


async def test_concurrent_stop_finishes_the_handlers_in_flight(js, make_event):
    stop, release = asyncio.Event(), asyncio.Event()
    started, finished = [], []

    async def handler(message, delivery):
        started.append(message.group_id)
        await release.wait()
        finished.append(message.group_id)

    for i in range(3):
        await publish(js, "run1", Kind.TASKS, task(make_event, f"g{i}"), msg_id=f"g{i}")
    runner = asyncio.create_task(consume(js, ROLLOUT_WORKERS, handler, stop, concurrency=2, fetch_timeout=0.2))
    await until(lambda: len(started) == 2)
    stop.set()
    await asyncio.sleep(0.3)
    assert not runner.done()  # still finishing what it started
    release.set()
    await asyncio.wait_for(runner, 2)
    assert finished == started == ["g0", "g1"]

    async def acked_all_but_g2() -> bool:
        info = await js.consumer_info(ROLLOUT_WORKERS.stream, ROLLOUT_WORKERS.name)
        return info.num_ack_pending == 0 and (await js.stream_info(stream_name(Kind.TASKS))).state.messages == 1

    await until(acked_all_but_g2)  # g0 and g1 acked (acks travel asynchronously), g2 never taken
