"""OpenTelemetry for every jetrl process: one tracer provider, W3C context in NATS headers.

gRPC metadata is handled by the OpenTelemetry gRPC interceptors (see jetrl.service and
jetrl.rpc); NATS headers by `inject` / `extract` below, used by jetrl.bus.
Spans are exported over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT (or the traces-only variant)
is set, e.g. to Jaeger's collector at http://jaeger:4317.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

tracer = trace.get_tracer("jetrl")


class Attr:
    """Every span attribute key jetrl sets, declared once (Jaeger searches by these)."""

    RUN_ID = "jetrl.run_id"
    GROUP_ID = "jetrl.group_id"
    BATCH_ID = "jetrl.batch_id"
    ATTEMPT = "jetrl.attempt"  # a group's task attempt (0, then each resume)
    PREFIXES_DROPPED = "jetrl.prefixes_dropped"  # stale prefixes a resume generated again
    SAMPLES = "jetrl.samples"
    VIEW = "jetrl.view"
    VERSION = "jetrl.version"
    TEACHER = "jetrl.teacher"  # the weights are the EMA teacher's
    BYTES = "jetrl.bytes"
    WEIGHTS_PATH = "jetrl.weights_path"  # how a version's weights came: the shared file or the stream


def resource(service_name: str) -> Resource:
    """Who a process's spans and metrics come from (jetrl.metrics uses it too)."""
    return Resource.create({"service.name": service_name, "service.namespace": "jetrl"})


def setup_tracing(service_name: str) -> TracerProvider:
    """Install the process-wide tracer provider; OTLP export only when an endpoint is configured."""
    provider = TracerProvider(resource=resource(service_name))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        # late import: the exporter pulls in grpc channels we do not want when tracing is off
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(timeout_millis=5000)
        provider.shutdown()


def inject(headers: dict[str, str] | None = None, ctx: otel_context.Context | None = None) -> dict[str, str]:
    """Headers carrying the current (or given) trace context, W3C `traceparent` format."""
    headers = dict(headers or {})
    propagate.inject(headers, context=ctx)
    return headers


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The remote context a message's headers carry (an empty context when they carry none)."""
    return propagate.extract(dict(headers or {}))


def link_from(headers: Mapping[str, str] | None) -> trace.Link | None:
    """A span link to the producer span of a message, for a step that consumes many messages."""
    span_ctx = trace.get_current_span(extract(headers)).get_span_context()
    return trace.Link(span_ctx) if span_ctx.is_valid else None


def trace_id_of(headers: Mapping[str, str] | None) -> str:
    """Hex trace id a message's headers carry ('' when none): its producer's trace."""
    ctx = trace.get_current_span(extract(headers)).get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else ""


def current_trace_id() -> str:
    """Hex trace id of the active span ('' outside any span): stored on lineage rows."""
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else ""


def current_traceparent() -> str:
    """The active span as a `traceparent` string, to resume a trace later (e.g. from the database)."""
    return inject().get("traceparent", "")
