"""The one way a jetrl service process runs: logs, tracing, a gRPC server with health and
reflection, background workers, and a graceful stop on SIGTERM.

Each `svc_<name>/__main__.py` calls `run_service` with its servicers and its bus workers.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from jetrl.config import Settings
from jetrl.logs import log_fields, setup_logging
from jetrl.telemetry import setup_tracing, shutdown_tracing

log = logging.getLogger(__name__)

Register = Callable[[grpc.aio.Server], Iterable[str]]
Worker = Callable[[asyncio.Event], Awaitable[None]]


async def serve(
    name: str,
    listen: str,
    register: Register,
    workers: Sequence[Worker] = (),
    on_stop: Callable[[], Awaitable[None]] | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or a worker raises), then stop accepting, drain workers, close.

    `register` adds the servicers and returns their full service names; each worker gets the stop
    event and must return soon after it is set (drain its subscriptions, finish the message at hand).
    """
    server = grpc.aio.server(interceptors=[aio_server_interceptor()])
    names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    if server.add_insecure_port(listen) == 0:
        raise SystemExit(f"{name}: cannot bind gRPC on {listen} (port in use?); set JETRL_LISTEN")
    await server.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(w(stop), name=getattr(w, "__name__", "worker")) for w in workers]
    for service_name in ("", *names):
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", extra=log_fields(listen=listen, services=names))
    if ready is not None:
        ready.set()

    failed: list[asyncio.Task] = []

    def on_done(task: asyncio.Task) -> None:
        # a worker may finish its job and return; one that raises takes the service down
        if not task.cancelled() and task.exception() is not None and not stop.is_set():
            failed.append(task)
            log.error("worker died", exc_info=task.exception(), extra=log_fields(worker=task.get_name()))
            stop.set()

    for t in tasks:
        t.add_done_callback(on_done)
    await stop.wait()
    log.info("stopping")
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=5)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for t, r in zip(tasks, results):
        if isinstance(r, Exception) and t not in failed:
            log.error("worker failed while stopping", exc_info=r, extra=log_fields(worker=t.get_name()))
    if on_stop is not None:
        await on_stop()
    if failed:
        raise SystemExit(f"{name}: a worker died; see the log above")


def run_service(name: str, main: Callable[[Settings], Awaitable[None]]) -> None:
    """Entry point body of `python -m svc_<name>`: settings, logs, tracing, then `main`."""
    settings = Settings()
    setup_logging(name, settings.log_level)
    setup_tracing(name)
    if settings.torch_threads:
        import torch  # late: the scheduler never needs it

        torch.set_num_threads(settings.torch_threads)
    try:
        asyncio.run(main(settings))
    finally:
        shutdown_tracing()
