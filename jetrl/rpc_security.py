"""Who may call jetrl's gRPC servers, and how its clients show it: TLS from certificate files and a
bearer token, both from Settings (jetrl/config.py), both off by default (the local stack).

A server given a token refuses every call that does not carry `authorization: Bearer <token>`
with UNAUTHENTICATED, except health checks (probes and healthchecks have no token) and
reflection (the .proto files are public anyway). The comparison takes constant time and no reply
or log line ever holds a token. The reward servers have a token of their own
(`grpc_reward_token`): a run may name a third-party reward server, which must never be sent the
token that creates runs and reads weights.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from pydantic import SecretStr

from jetrl.config import Settings

EXEMPT = ("/grpc.health.v1.Health/", "/grpc.reflection.")  # method prefixes that need no token
STACK_TOKEN, REWARD_TOKEN = "JETRL_GRPC_TOKEN", "JETRL_GRPC_REWARD_TOKEN"


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _read(path: Path | None, setting: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path}: {exc.strerror}") from None


def is_loopback(listen: str) -> bool:
    """Whether `host:port` binds this host only (127.0.0.1, ::1, localhost)."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name or an empty host (every interface)


@dataclass(frozen=True)
class ServerSecurity:
    """A gRPC server's TLS key pair and the token it requires; none of either by default."""

    cert_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)  # repr: never in a log line
    token: str | None = field(default=None, repr=False)
    token_setting: str = STACK_TOKEN  # the setting a refused caller is told to set

    @classmethod
    def of(cls, settings: Settings, reward: bool = False) -> ServerSecurity:
        """A jetrl service's (`reward`: a built-in reward server's, which checks the reward token)."""
        return cls(
            cert_chain=_read(settings.grpc_tls_cert, "JETRL_GRPC_TLS_CERT"),
            private_key=_read(settings.grpc_tls_key, "JETRL_GRPC_TLS_KEY"),
            token=_secret(settings.grpc_reward_token if reward else settings.grpc_token),
            token_setting=REWARD_TOKEN if reward else STACK_TOKEN,
        )

    def add_port(self, server: grpc.aio.Server, listen: str) -> int:
        """Bind `listen`, with TLS when there is a key pair; the port, 0 when it cannot bind."""
        if self.cert_chain is None or self.private_key is None:
            return server.add_insecure_port(listen)
        return server.add_secure_port(listen, grpc.ssl_server_credentials([(self.private_key, self.cert_chain)]))

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [] if self.token is None else [_RequireToken(self.token, self.token_setting)]

    def exposure(self, listen: str) -> str | None:
        """Why binding `listen` is unsafe, or None: anyone beyond this host could call without a token."""
        if self.token is not None or is_loopback(listen):
            return None
        return f"gRPC on {listen} accepts any caller: set {self.token_setting} to require a token"


class _RequireToken(grpc.aio.ServerInterceptor):
    def __init__(self, token: str, setting: str):
        self._expected = f"Bearer {token}".encode()
        message = f"missing or wrong bearer token: set {setting} to the token this server requires"

        async def refuse(request: object, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        # a unary handler refuses a streaming call as well: it aborts before any reply
        self._refuse: grpc.RpcMethodHandler = grpc.unary_unary_rpc_method_handler(refuse)

    def _carries_token(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
        given = [v if isinstance(v, bytes) else v.encode() for k, v in metadata or () if k == "authorization"]
        return any(hmac.compare_digest(v, self._expected) for v in given)

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        if details.method.startswith(EXEMPT) or self._carries_token(details.invocation_metadata):
            return await continuation(details)
        return self._refuse


@dataclass(frozen=True)
class ClientCredentials:
    """What a gRPC client shows a server: TLS trusting `root_certificates` when set, and `token`."""

    root_certificates: bytes | None = None
    token: str | None = field(default=None, repr=False)  # repr: never in a log line

    @classmethod
    def of(cls, settings: Settings, reward: bool = False) -> ClientCredentials:
        """A jetrl client's (`reward`: toward reward servers, with the reward token, never the stack's)."""
        return cls(
            root_certificates=_read(settings.grpc_tls_ca, "JETRL_GRPC_TLS_CA"),
            token=_secret(settings.grpc_reward_token if reward else settings.grpc_token),
        )

    def open(
        self, addr: str, options: Sequence[tuple[str, int]], interceptors: Sequence[grpc.aio.ClientInterceptor] = ()
    ) -> grpc.aio.Channel:
        """A channel to `addr`: TLS or plaintext, the token on every call."""
        every = [*interceptors, *_bearer(self.token)]
        if self.root_certificates is None:
            return grpc.aio.insecure_channel(addr, options=options, interceptors=every)
        tls = grpc.ssl_channel_credentials(root_certificates=self.root_certificates)
        return grpc.aio.secure_channel(addr, tls, options=options, interceptors=every)


def _bearer(token: str | None) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors adding the token to unary and server-streaming calls (jetrl's protos have no
    other kind); grpc files an interceptor under the first call kind it implements, hence two. A
    call credential would send it only over TLS, and the token must also work in plaintext."""
    return [] if token is None else [_BearerUnary(token), _BearerStream(token)]


class _Bearer:
    def __init__(self, token: str):
        self._pair = ("authorization", f"Bearer {token}")

    def with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._pair)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _BearerUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self.with_token(details), request)


class _BearerStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self.with_token(details), request)


LOCAL = ClientCredentials()  # the local stack's, and every default: plaintext, no token
