"""Connecting a service to NATS: auth, TLS, endless reconnects, and a clear error at start.

Once connected a service rides out broker restarts (nats-py reconnects forever and buffers
publishes); at start, though, an unreachable broker is a configuration problem, so `connect`
gives up after a short timeout and says what to do instead of retrying silently.

A subject the broker refuses this user (jetrl/bus/permissions.py) is a configuration problem too:
nats-py only reports it to the error callback, and the request then times out like an outage
would, retried for ever. Here it is logged naming the user, the subject and what to do, and the
request waiting on that subject fails at once with PermissionDenied (never transient).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from typing import Any

import nats
from nats.aio.client import Client

from jetrl.bus.permissions import ROLES, SERVICE_ROLES, inbox_prefix
from jetrl.bus.refusals import BusClient, PermissionDenied
from jetrl.config import Settings
from jetrl.logs import log_fields

log = logging.getLogger(__name__)
# nats-server's words, passed on lowercased by nats-py: `nats: permissions violation for publish to "x"`
_REFUSED = re.compile(r"permissions violation for (publish|subscription) to \"?([^\"\s']+)", re.I)
_SUBJECT_TOKEN = re.compile(r"[\w-]+")


class BusUnreachable(RuntimeError):
    """No NATS server answered at start."""


def refusal(name: str, user: str | None, operation: str, subject: str) -> PermissionDenied:
    """What a refused `operation` ("publish" or "subscribe") on `subject` means, and what to do."""
    role = next((r for module, r in SERVICE_ROLES.items() if name.startswith(module)), None)
    who = f"{name} (NATS user {user!r})" if user else f"{name} (no NATS user)"
    if role and user != role:
        fix = f"it is the {role!r} role: connect it as that user (JETRL_NATS_USER={role} and its password)"
    elif user in ROLES:
        fix = (
            f"the {user!r} role may not: if this version needs it, the broker runs an older config, so "
            "regenerate it (`jetrl nats config`, deploy/nats/auth.conf) and restart nats-server"
        )
    else:
        fix = "connect as the service's own role user (jetrl/bus/permissions.py ROLES) or as admin"
    return PermissionDenied(f"{who}: NATS refused to let it {operation} to {subject!r}; {fix}")


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
        if _SUBJECT_TOKEN.fullmatch(settings.nats_user):
            # replies to this user's own inbox, the only one its role may subscribe to
            opts["inbox_prefix"] = inbox_prefix(settings.nats_user)
    if settings.nats_token:
        opts["token"] = settings.nats_token
    ctx = tls_context(settings)
    if ctx is not None:
        opts["tls"] = ctx
    return opts


async def connect(settings: Settings, name: str, timeout: float = 5.0) -> BusClient:
    """A connected client named `name`; BusUnreachable if no server answers within `timeout` s."""
    opts = connect_options(settings, name)
    url = redact(settings.nats_url)
    last_error: list[BaseException] = []

    async def on_error(exc: Exception) -> None:
        if refused := _REFUSED.search(str(exc)):
            operation = "publish" if refused[1].lower() == "publish" else "subscribe"
            first = not nc.was_refused(refused[2])  # logged once: a pull fetch is refused every second
            spelled = nc.refuse(refused[2], lambda subj: refusal(name, settings.nats_user, operation, subj))
            if first:
                error = refusal(name, settings.nats_user, operation, spelled)
                log.error("nats permission refused", extra=log_fields(url=url, error=str(error)))
            return
        last_error[:] = [exc]
        log.warning("nats error", extra=log_fields(url=url, error=repr(exc)))

    async def on_disconnected() -> None:
        log.warning("disconnected from nats, reconnecting", extra=log_fields(url=url))

    async def on_reconnected() -> None:
        now = redact(str(nc.connected_url.geturl())) if nc.connected_url is not None else url
        log.info("reconnected to nats", extra=log_fields(url=now))

    async def on_closed() -> None:
        log.info("nats connection closed", extra=log_fields(url=url))

    nc = BusClient()
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
