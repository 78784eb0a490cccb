"""gRPC client side: traced channels carrying the caller's credentials (TLS, token:
jetrl/rpc_security.py), and a health probe usable from compose and the CLI.

Run:  python -m jetrl.rpc HOST:PORT    # exit 0 when the server reports SERVING (compose healthcheck;
                                       # TLS as JETRL_GRPC_TLS_CA says)
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from jetrl.config import Settings
from jetrl.rpc_security import ClientCredentials

# Weights and batches can exceed gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


def channel(
    addr: str, credentials: Settings | ClientCredentials, options: Sequence[tuple[str, int]] = ()
) -> grpc.aio.Channel:
    """An aio channel whose calls carry the trace context and the token in their metadata, over TLS
    when the credentials have a CA. Given Settings: the stack's credentials (ClientCredentials.of)."""
    return _credentials(credentials).open(addr, CHANNEL_OPTIONS + list(options), aio_client_interceptors())


def _credentials(credentials: Settings | ClientCredentials) -> ClientCredentials:
    return ClientCredentials.of(credentials) if isinstance(credentials, Settings) else credentials


async def is_serving(addr: str, credentials: Settings | ClientCredentials, timeout: float = 1.0) -> bool:
    """Whether grpc.health.v1 says SERVING (it needs no token; TLS as the credentials say). Not
    traced: a probe every few seconds would drown the traces."""
    async with _credentials(credentials).open(addr, ()) as ch:
        try:
            # types-grpcio-health-checking's HealthStub declares no methods; the generated one has Check
            stub = health_pb2_grpc.HealthStub(ch)
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)  # type: ignore[attr-defined]
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


async def wait_serving(
    addr: str, credentials: Settings | ClientCredentials, timeout: float = 60.0, what: str = "service"
) -> None:
    """Poll grpc.health.v1 until SERVING; raise TimeoutError naming the address otherwise."""
    deadline = time.monotonic() + timeout
    while not await is_serving(addr, credentials):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} at {addr} not healthy after {timeout:.0f}s")
        await asyncio.sleep(0.2)


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m jetrl.rpc HOST:PORT", file=sys.stderr)
        return 2
    return 0 if asyncio.run(is_serving(sys.argv[1], Settings(), timeout=3.0)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
