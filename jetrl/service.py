"""The one way a jetrl service process runs: logs, tracing, metrics, a gRPC server with health and
reflection, supervised background workers, and a graceful stop on SIGTERM.

Each `svc_<name>/__main__.py` calls `run_app`, whose `app.main` calls `serve` with its servicers
and its bus workers. A service rides out its dependencies: a worker that raises (Postgres or NATS
away, say) is started again with backoff instead of taking the process down, health says
NOT_SERVING while a worker is failing or the service's own probe fails, and an RPC that fails
because a dependency is away answers UNAVAILABLE, which clients retry, instead of UNKNOWN; one
that a request field fails (jetrl/validate_rpc.py) answers INVALID_ARGUMENT. The server speaks
TLS and requires a token as its ServerSecurity says (jetrl/rpc_security.py).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from jetrl.bus.retry import is_transient
from jetrl.config import Settings
from jetrl.logs import log_fields, setup_logging
from jetrl.metrics import setup_metrics, shutdown_metrics
from jetrl.rpc_security import ServerSecurity
from jetrl.telemetry import setup_tracing, shutdown_tracing
from jetrl.validate_rpc import InvalidArgument

log = logging.getLogger(__name__)

Register = Callable[[grpc.aio.Server], Iterable[str]]
Worker = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
# None when the service's dependencies answer, else what is wrong (it goes in the log)
Probe = Callable[[], Awaitable[str | None]]
PROBE_EVERY_S = 2.0
RESTART_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)
RECOVERED_AFTER_S = 5.0  # a restarted worker that ran this long is well again: its backoff starts over


async def _status_of(exc: Exception, context: grpc.aio.ServicerContext) -> None:
    """Answer INVALID_ARGUMENT for a bad request field, UNAVAILABLE (clients retry) when a
    dependency is away; re-raise anything else."""
    if isinstance(exc, InvalidArgument):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)[:1000])
    if not is_transient(exc):
        raise exc
    await context.abort(grpc.StatusCode.UNAVAILABLE, f"a dependency is unavailable, retry: {exc!r}"[:500])


class _Statuses(grpc.aio.ServerInterceptor):
    """Gives the exceptions `_status_of` knows their status instead of UNKNOWN."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request, context):
                try:
                    return await inner(request, context)
                except Exception as exc:
                    await _status_of(exc, context)

            return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream is not None:
            stream = handler.unary_stream

            async def streaming(request, context):
                try:
                    async for item in stream(request, context):
                        yield item
                except Exception as exc:
                    await _status_of(exc, context)

            return grpc.unary_stream_rpc_method_handler(
                streaming, handler.request_deserializer, handler.response_serializer
            )
        return handler


class _Health:
    """SERVING exactly when the probe passes and no worker is failing."""

    def __init__(self, servicer: health.aio.HealthServicer, names: list[str]):
        self.servicer = servicer
        self.names = ["", *names]
        self.failing: set[str] = set()
        self.probe_error: str | None = None
        self.serving: bool | None = None

    async def update(self) -> None:
        serving = not self.failing and self.probe_error is None
        if serving == self.serving:
            return
        self.serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self.names:
            await self.servicer.set(name, status)
        if serving:
            log.info("serving")
        else:
            log.warning("not serving", extra=log_fields(failing=sorted(self.failing), probe=self.probe_error))


async def _supervise(worker: Worker, name: str, stop: asyncio.Event, state: _Health) -> None:
    """Run a worker until it returns or `stop`; when it raises, start it again after a backoff.

    It counts as failing (NOT_SERVING) from its failure until it has run again for a while.
    """
    failures = 0
    while not stop.is_set():
        task = asyncio.create_task(worker(stop))
        done, _ = await asyncio.wait({task}, timeout=RECOVERED_AFTER_S)
        if not done:
            failures = 0
            state.failing.discard(name)
            await state.update()
        try:
            await task
            state.failing.discard(name)
            await state.update()
            return  # a worker may finish its job (the scheduler's resume) and return
        except Exception as exc:
            if stop.is_set():
                raise
            delay = RESTART_DELAYS_S[min(failures, len(RESTART_DELAYS_S) - 1)]
            failures += 1
            # a dependency away is expected to come back: one line; anything else: the traceback
            log.error(
                "worker failed, starting it again",
                exc_info=None if is_transient(exc) else exc,
                extra=log_fields(worker=name, error=repr(exc)[:300], retry_in_s=delay),
            )
            state.failing.add(name)
            await state.update()
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass


async def _watch(probe: Probe, stop: asyncio.Event, state: _Health) -> None:
    while not stop.is_set():
        try:
            state.probe_error = await asyncio.wait_for(probe(), PROBE_EVERY_S * 2)
        except Exception as exc:
            state.probe_error = repr(exc)[:300]
        await state.update()
        try:
            await asyncio.wait_for(stop.wait(), PROBE_EVERY_S)
        except TimeoutError:
            pass


def grpc_server(security: ServerSecurity, options: Sequence[tuple[str, int]] = ()) -> grpc.aio.Server:
    """A gRPC server as every jetrl servicer expects one (serve() makes its own with it; a test or a
    benchmark serving a servicer alone too): traced, the token checked first (a refused call is
    still traced), and the exceptions `_status_of` knows given their status. Bind it with
    `security.add_port`."""
    return grpc.aio.server(
        interceptors=[aio_server_interceptor(), *security.interceptors(), _Statuses()], options=list(options)
    )


async def serve(
    name: str,
    listen: str,
    register: Register,
    workers: Sequence[Worker] = (),
    on_stop: Callable[[], Awaitable[None]] | None = None,
    ready: asyncio.Event | None = None,
    probe: Probe | None = None,
    *,
    security: ServerSecurity,
) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting, drain workers, close.

    `register` adds the servicers and returns their full service names; each worker gets the stop
    event and must return soon after it is set (drain its subscriptions, finish the message at
    hand); a worker that raises is started again (with backoff) while health says NOT_SERVING.
    `probe` checks the service's dependencies every few seconds for its health status;
    `security` (ServerSecurity.of(settings)): TLS and the token callers must send.
    """
    server = grpc_server(security)
    names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    if security.add_port(server, listen) == 0:
        raise SystemExit(f"{name}: cannot bind gRPC on {listen} (port in use?); set JETRL_LISTEN")
    await server.start()
    if (exposure := security.exposure(listen)) is not None:
        log.warning(exposure)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    state = _Health(health_servicer, names)
    await state.update()
    tasks = [
        asyncio.create_task(
            _supervise(w, getattr(w, "__name__", "worker"), stop, state), name=getattr(w, "__name__", "worker")
        )
        for w in workers
    ]
    if probe is not None:
        tasks.append(asyncio.create_task(_watch(probe, stop, state), name="probe"))
    log.info(
        "listening",
        extra=log_fields(
            listen=listen, services=names, tls=security.cert_chain is not None, token=security.token is not None
        ),
    )
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("stopping")
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=5)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for t, r in zip(tasks, results):
        if isinstance(r, Exception):
            log.error("worker failed while stopping", exc_info=r, extra=log_fields(worker=t.get_name()))
    if on_stop is not None:
        await on_stop()


def use_torch_threads(settings: Settings) -> None:
    """Apply `torch_threads` (the services that run a model call this; the scheduler never loads torch)."""
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)


def registering(add: Callable[[Any, grpc.aio.Server], None], servicer: Any, service: str) -> Register:
    """The Register of one servicer: `add` is its generated add_*Servicer_to_server, `service`
    the full name of its service (for reflection and health)."""

    def register(server: grpc.aio.Server) -> list[str]:
        add(servicer, server)
        return [service]

    return register


def run_app(name: str) -> None:
    """The whole of `svc_<name>/__main__.py`: run `svc_<name>.app.main`, imported only now (torch
    and transformers load in the service, not when the package is imported)."""
    run_service(name, lambda settings: importlib.import_module(f"{name}.app").main(settings))


def run_service(name: str, main: Callable[[Settings], Coroutine[Any, Any, None]]) -> None:
    """Entry point body of `python -m svc_<name>`: settings, logs, tracing, the metrics endpoint
    (when `metrics_port` is set), then `main`."""
    settings = Settings()
    setup_logging(name, settings.log_level)
    setup_tracing(name)
    if settings.metrics_port:
        # beside the gRPC server: on the host of `listen` (containers: every interface)
        host = (settings.listen or "127.0.0.1:0").rsplit(":", 1)[0].strip("[]")
        setup_metrics(name, host, settings.metrics_port)
    try:
        asyncio.run(main(settings))
    finally:
        shutdown_metrics()
        shutdown_tracing()
