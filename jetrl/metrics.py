"""Service metrics: every OpenTelemetry instrument jetrl records, declared once, and the
Prometheus endpoint that exports them.

The instruments are made at import from the global meter, a proxy until `setup_metrics` installs
the process's MeterProvider (jetrl.service.run_service does, when `metrics_port` is set): before
that, or without it, recording costs next to nothing and goes nowhere. Prometheus names a series
after its instrument, with `_total` after a counter and `_bucket`, `_sum`, `_count` after a
histogram (`SERIES`); deploy/grafana's dashboard queries them and tests/unit/test_compose.py checks
that it names only these.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider

from jetrl.telemetry import resource

__all__ = [
    "Metric",
    "SERIES",
    "EVENTS_HANDLED",
    "REWARD_CALL_SECONDS",
    "TOKENS_GENERATED",
    "VERSIONS_RECORDED",
    "Outcome",
    "levels",
    "exporting",
    "setup_metrics",
    "shutdown_metrics",
]


class Metric:
    """Every instrument's name (Prometheus's too, before its type's suffix)."""

    EVENTS_HANDLED = "jetrl_events_handled"  # counter: consumer, outcome (Outcome)
    CONSUMER_LAG = "jetrl_consumer_lag"  # gauge: consumer; messages not yet acked (pending + in flight)
    QUEUE_DEPTH = "jetrl_queue_depth"  # gauge: stream; messages in a work-queue stream
    REWARD_CALL_SECONDS = "jetrl_reward_call_seconds"  # histogram: endpoint, outcome (ok, error)
    TOKENS_GENERATED = "jetrl_tokens_generated"  # counter: new completion tokens a rollout worker made
    VERSIONS_RECORDED = "jetrl_versions_recorded"  # counter: run_id; policy versions the scheduler recorded


class Outcome:
    """What became of a handled event (EVENTS_HANDLED's `outcome`)."""

    OK = "ok"  # handled and acked
    INVALID = "invalid"  # malformed or refused: dead-lettered
    WAITING = "waiting"  # a Wait or a dependency away: retried, not the event's fault
    FAILED = "failed"  # the handler raised: retried, dead-lettered at its max_failures


SERIES = frozenset(
    {
        f"{Metric.EVENTS_HANDLED}_total",
        Metric.CONSUMER_LAG,
        Metric.QUEUE_DEPTH,
        *(f"{Metric.REWARD_CALL_SECONDS}_{suffix}" for suffix in ("bucket", "sum", "count")),
        f"{Metric.TOKENS_GENERATED}_total",
        f"{Metric.VERSIONS_RECORDED}_total",
    }
)
"""Every series name the endpoint exports for jetrl's instruments."""

# a Score call takes milliseconds (the built-in verifier) to a minute (an LLM judge at its deadline)
_REWARD_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Levels:
    """The last polled value of each gauge series, read when Prometheus scrapes (from the
    endpoint's thread, hence the lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str, str], float] = {}

    def set(self, metric: str, label: str, value: str, level: float) -> None:
        with self._lock:
            self._values[(metric, label, value)] = level

    def drop(self, metric: str, label: str, value: str) -> None:
        """Forget a series (its consumer stopped here): no stale level is exported."""
        with self._lock:
            self._values.pop((metric, label, value), None)

    def observe(self, metric: str) -> Iterable[Observation]:
        with self._lock:
            items = [(k, v) for k, v in self._values.items() if k[0] == metric]
        return [Observation(v, {label: value}) for (_, label, value), v in items]


levels = Levels()
_meter = metrics.get_meter("jetrl")

EVENTS_HANDLED = _meter.create_counter(
    Metric.EVENTS_HANDLED, unit="{event}", description="Events a durable consumer handled, by outcome"
)
REWARD_CALL_SECONDS = _meter.create_histogram(
    Metric.REWARD_CALL_SECONDS,
    unit="s",
    description="Duration of each Score call attempt to a reward endpoint",
    explicit_bucket_boundaries_advisory=_REWARD_BUCKETS_S,
)
TOKENS_GENERATED = _meter.create_counter(
    Metric.TOKENS_GENERATED, unit="{token}", description="New completion tokens this rollout worker generated"
)
VERSIONS_RECORDED = _meter.create_counter(
    Metric.VERSIONS_RECORDED, unit="{version}", description="Policy versions the scheduler recorded, by run"
)


def _gauge(name: str, description: str) -> None:
    """An observable gauge whose series are the `levels` polled for it."""

    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        return levels.observe(name)

    _meter.create_observable_gauge(name, callbacks=[observe], unit="{message}", description=description)


_gauge(Metric.CONSUMER_LAG, "Messages of a durable consumer not yet acked (pending + delivered, unacked)")
_gauge(Metric.QUEUE_DEPTH, "Messages waiting in a work-queue stream")

_server: WSGIServer | None = None


def setup_metrics(service_name: str, host: str, port: int) -> None:
    """Install the process-wide MeterProvider and serve `/metrics` for Prometheus on host:port."""
    global _server
    # late imports: a process without the endpoint never loads the exporter or prometheus_client
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import start_http_server

    try:
        _server, _ = start_http_server(port, addr=host)
    except OSError as exc:
        raise SystemExit(
            f"{service_name}: cannot serve metrics on {host}:{port} ({exc}); set JETRL_METRICS_PORT"
        ) from None
    metrics.set_meter_provider(
        MeterProvider(resource=resource(service_name), metric_readers=[PrometheusMetricReader()])
    )


def exporting() -> bool:
    """Whether this process serves its metrics (levels worth polling)."""
    return _server is not None


def shutdown_metrics() -> None:
    """Stop the endpoint (the provider has nothing to flush: Prometheus pulls)."""
    global _server
    if _server is not None:
        _server.shutdown()
        _server.server_close()
        _server = None
