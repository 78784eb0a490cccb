"""Refused subjects: a NATS client that fails a request at once when the broker refuses its subject.

nats-py only reports a permission violation to the error callback (jetrl.bus.connection turns
it into a PermissionDenied saying what to do and hands it to `BusClient.refuse`); the request
itself would time out like an outage, which the bus retries for ever. Kept apart from the
connection so that the topology can name PermissionDenied without importing the roles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext


class PermissionDenied(RuntimeError):
    """The broker refused this user a subject: a wrong user or an outdated broker config."""


# what a refused subject means, for the subject as the caller spells it: nats-py hands over the
# server's error lowercased, so the refusal is known by the lowercased subject
Describe = Callable[[str], PermissionDenied]


class BusClient(Client):
    """nats-py's client whose requests (JetStream publishes and API calls) fail at once, with
    PermissionDenied, when the broker refuses their subject, instead of timing out."""

    def __init__(self) -> None:
        super().__init__()
        self._refused: dict[str, Describe] = {}
        self._waiting: dict[str, dict[asyncio.Future[Any], str]] = {}

    def was_refused(self, subject: str) -> bool:
        return subject.lower() in self._refused

    def refuse(self, lowered: str, describe: Describe) -> str:
        """The broker refused `lowered` (a subject, lowercased): fail every request waiting on it.
        The subject as a waiting request spells it, else as given."""
        self._refused[lowered] = describe
        waiting = self._waiting.pop(lowered, {})
        for waiter, spelled in waiting.items():
            if not waiter.done():
                waiter.set_exception(describe(spelled))
        return next(iter(waiting.values()), lowered)

    def raise_if_refused(self, subject: str) -> None:
        """For calls that only time out (a pull fetch): raise when the broker refused `subject`."""
        if describe := self._refused.get(subject.lower()):
            raise describe(subject)

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float = 0.5,
        old_style: bool = False,
        headers: dict[str, Any] | None = None,
    ) -> Msg:
        """nats-py's request, or PermissionDenied as soon as the broker refuses `subject`."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(subject.lower(), {})[waiter] = subject
        reply: asyncio.Future[Any] = asyncio.ensure_future(
            super().request(subject, payload, timeout, old_style, headers)
        )
        try:
            await asyncio.wait({reply, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not reply.done():
                waiter.result()  # raises the refusal
            msg: Msg = reply.result()
            self._refused.pop(subject.lower(), None)  # allowed now: the broker's config was reloaded
            return msg
        finally:
            self._waiting.get(subject.lower(), {}).pop(waiter, None)
            reply.cancel()


def raise_if_refused(js: JetStreamContext, subject: str) -> None:
    """PermissionDenied when the broker refused this context's client `subject` (a BusClient's)."""
    nc = js._nc  # nats-py keeps the client there; jetrl's contexts are all made from a BusClient
    if isinstance(nc, BusClient):
        nc.raise_if_refused(subject)
