"""Connecting a service to NATS: auth, TLS, endless reconnects, and a clear error at start.

Once connected a service rides out broker restarts (nats-py reconnects forever and buffers
publishes); at start, though, an unreachable broker is a configuration problem, so `connect`
gives up after a short timeout and says what to do instead of retrying silently.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from typing import Any

import nats
from nats.aio.client import Client

from jetrl.config import Settings
from jetrl.logs import log_fields

log = logging.getLogger(__name__)


class BusUnreachable(RuntimeError):
    """No NATS server answered at start."""


def redact(url: str) -> str:
    """The URL(s) without credentials, fit for logs and error messages."""
    return re.sub(r"//[^/@,]*@", "//***@", url)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Client TLS context when a CA or a client certificate is configured, else None."""
    if not (settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    ctx = ssl.create_default_context(cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None)
    if settings.nats_tls_cert:
        ctx.load_cert_chain(str(settings.nats_tls_cert), str(settings.nats_tls_key) if settings.nats_tls_key else None)
    elif settings.nats_tls_key:
        raise ValueError("JETRL_NATS_TLS_KEY is set without JETRL_NATS_TLS_CERT")
    return ctx


def connect_options(settings: Settings, name: str) -> dict[str, Any]:
    """Keyword arguments of `nats.connect` for these settings (callbacks excluded)."""
    if settings.nats_token and (settings.nats_user or settings.nats_password):
        raise ValueError("set either JETRL_NATS_TOKEN or JETRL_NATS_USER/PASSWORD, not both")
    if bool(settings.nats_user) != bool(settings.nats_password):
        raise ValueError("JETRL_NATS_USER and JETRL_NATS_PASSWORD go together")
    opts: dict[str, Any] = {
        "servers": [u.strip() for u in settings.nats_url.split(",") if u.strip()],
        "name": name,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
        "connect_timeout": 2,
    }
    if settings.nats_user:
        opts["user"], opts["password"] = settings.nats_user, settings.nats_password
    if settings.nats_token:
        opts["token"] = settings.nats_token
    ctx = tls_context(settings)
    if ctx is not None:
        opts["tls"] = ctx
    return opts


async def connect(settings: Settings, name: str, timeout: float = 5.0) -> Client:
    """A connected client named `name`; BusUnreachable if no server answers within `timeout` s."""
    opts = connect_options(settings, name)
    url = redact(settings.nats_url)
    last_error: list[BaseException] = []

    async def on_error(exc: Exception) -> None:
        last_error[:] = [exc]
        log.warning("nats error", extra=log_fields(url=url, error=repr(exc)))

    async def on_disconnected() -> None:
        log.warning("disconnected from nats, reconnecting", extra=log_fields(url=url))

    async def on_reconnected() -> None:
        now = redact(str(nc.connected_url.geturl())) if nc.connected_url is not None else url
        log.info("reconnected to nats", extra=log_fields(url=now))

    async def on_closed() -> None:
        log.info("nats connection closed", extra=log_fields(url=url))

    nc = Client()
    try:
        # nats-py retries the first connect forever when reconnects are unlimited: bound it here
        await asyncio.wait_for(
            nc.connect(
                **opts,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                closed_cb=on_closed,
            ),
            timeout,
        )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        await nc.close()
        cause = last_error[0] if last_error else exc
        raise BusUnreachable(
            f"{name}: cannot reach NATS at {url} ({type(cause).__name__}: {cause}). Start a JetStream "
            "nats-server there (`nats-server -js`, or `jetrl up` for the local stack), or set "
            "JETRL_NATS_URL (and JETRL_NATS_USER/PASSWORD, TOKEN or TLS_*) to the right server."
        ) from None
    return nc


def bus_probe(nc: Client):
    """A health probe (jetrl.service.Probe) that fails while the client is not connected."""

    async def probe() -> str | None:
        return None if nc.is_connected else "NATS is not connected (reconnecting)"

    return probe
