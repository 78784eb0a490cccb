"""A service's Prometheus endpoint (jetrl/metrics.py), scraped over HTTP while a durable consumer
handles events on a real broker: the handled-events counter and the polled lag and queue depth
move as the events go through."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jetrl.bus import ROLLOUT_WORKERS, InvalidEvent, Kind, consume, publish
from jetrl.bus import levels as level_polls
from jetrl.localstack import free_port
from jetrl.metrics import SERIES, Metric, setup_metrics, shutdown_metrics

CONSUMER = ROLLOUT_WORKERS.name


@pytest.fixture
def endpoint(monkeypatch):
    monkeypatch.setattr(level_polls, "LEVELS_EVERY_S", 0.1)
    port = free_port()
    setup_metrics("svc_rollout", "127.0.0.1", port)  # what run_service does with JETRL_METRICS_PORT
    yield f"http://127.0.0.1:{port}/metrics"
    shutdown_metrics()


async def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """{series name: {sorted labels: value}} of one scrape."""
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel_scope")))
            out.setdefault(s.name, {})[labels] = s.value
    return out


async def until_scraped(url: str, check, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got = await scrape(url)
        try:
            check(got)
            return got
        except (AssertionError, KeyError):
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


def handled(got: dict, outcome: str) -> float:
    return got.get(f"{Metric.EVENTS_HANDLED}_total", {}).get((("consumer", CONSUMER), ("outcome", outcome)), 0.0)


async def test_the_endpoint_counts_handled_events_and_exports_lag_and_depth(js, make_event, endpoint):
    for i in range(4):
        task = make_event(Kind.TASKS)
        task.group_id = f"run1.s0.g{i}"
        await publish(js, "run1", Kind.TASKS, task, msg_id=task.group_id)
    gate = asyncio.Event()

    async def handler(task, delivery) -> None:
        await gate.wait()
        if task.group_id.endswith("g3"):
            raise InvalidEvent("a task no worker can take")

    stop = asyncio.Event()
    consuming = asyncio.create_task(consume(js, ROLLOUT_WORKERS, handler, stop, fetch_timeout=0.2, retry_delay=0.05))
    try:
        # the first task is held by its handler: none handled yet, all four waiting
        def waiting(got: dict) -> None:
            assert got[Metric.CONSUMER_LAG][(("consumer", CONSUMER),)] == 4
            assert got[Metric.QUEUE_DEPTH][(("stream", ROLLOUT_WORKERS.stream),)] == 4
            assert handled(got, "ok") == 0

        got = await until_scraped(endpoint, waiting)
        assert ("service_name", "svc_rollout") in next(iter(got["target_info"]))
        gate.set()

        def done(got: dict) -> None:
            assert handled(got, "ok") == 3 and handled(got, "invalid") == 1
            assert got[Metric.CONSUMER_LAG][(("consumer", CONSUMER),)] == 0
            assert got[Metric.QUEUE_DEPTH][(("stream", ROLLOUT_WORKERS.stream),)] == 0

        got = await until_scraped(endpoint, done)
        assert {f"{Metric.EVENTS_HANDLED}_total", Metric.CONSUMER_LAG, Metric.QUEUE_DEPTH} <= set(got) & SERIES
    finally:
        gate.set()
        stop.set()
        await asyncio.wait_for(consuming, 5)
    # the consumer stopped here: its levels are no longer exported
    assert Metric.CONSUMER_LAG not in await scrape(endpoint)
