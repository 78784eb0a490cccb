"""`jetrl nats`: the broker's users, their passwords, and the streams they use.

  jetrl nats config          the authorization block of every user (deploy/nats/auth.conf is it)
  jetrl nats secrets FILE    random passwords for every user, as NAME=value lines (0600): compose's
                             `.env`, or the env file of a k8s secretGenerator for the Secret jetrl-nats
  jetrl nats declare         create or update every stream and durable consumer, as the admin user

`jetrl up` does all three for the local stack: its nats-server has these users (passwords in
$JETRL_DATA_DIR/nats-auth/passwords.env), it declares as admin and starts each service as its
role. On that stack `jetrl nats declare` connects as admin by itself.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from jetrl.bus.credentials import as_admin, ensure_passwords, server_env
from jetrl.bus.permissions import SERVICE_ROLES, render_authorization
from jetrl.config import Settings

NATS_CREDENTIALS = ("JETRL_NATS_USER", "JETRL_NATS_PASSWORD", "JETRL_NATS_TOKEN")


def auth_dir(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "nats-auth"


def local_auth(settings: Settings) -> tuple[Path, dict[str, str]]:
    """The local stack's nats-server config with the users, written now, and its environment."""
    passwords = ensure_passwords(auth_dir(settings) / "passwords.env")
    config = auth_dir(settings) / "auth.conf"
    config.write_text(render_authorization())
    return config, server_env(passwords)


def stack_passwords(settings: Settings) -> dict[str, str] | None:
    """The users' passwords when the broker is the one `jetrl up` starts (its pid file is there
    and so are the passwords); None for a broker of its own, whose users jetrl does not know."""
    passwords = auth_dir(settings) / "passwords.env"
    if not (settings.data_dir.resolve() / "pids" / "nats-server.pid").exists() or not passwords.exists():
        return None
    return ensure_passwords(passwords)


def operator_settings(settings: Settings) -> Settings:
    """`settings` as the NATS admin user on the local stack's own broker; else as they are."""
    passwords = stack_passwords(settings)
    return as_admin(settings, passwords) if passwords else settings


def with_role(env: dict[str, str], settings: Settings, module: str) -> dict[str, str]:
    """A started process's environment with its own NATS user on the local stack's broker: its
    role's for a service (jetrl.bus.permissions.SERVICE_ROLES), none for anything else (a
    reward server run alone does not use the bus). A broker of its own: `env` as it is."""
    passwords = stack_passwords(settings)
    if passwords is None:
        return env
    env = {name: value for name, value in env.items() if name not in NATS_CREDENTIALS}
    if role := SERVICE_ROLES.get(module):
        env |= {"JETRL_NATS_USER": role, "JETRL_NATS_PASSWORD": passwords[role]}
    return env


async def declare_layout(settings: Settings) -> None:
    """Create or update every stream and durable consumer (the admin's step: services only check)."""
    from jetrl.bus import connect, declare

    nc = await connect(settings, "jetrl-nats-declare")
    try:
        await declare(nc.jetstream(), replicas=settings.stream_replicas)
    finally:
        await nc.close()


def add_commands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="nats_action", required=True)
    sub.add_parser("config", help="print the authorization block of every user (deploy/nats/auth.conf)")
    secrets = sub.add_parser("secrets", help="write random passwords for every user (kept: those it has)")
    secrets.add_argument("file", type=Path, help="env file: compose's .env, or a k8s secretGenerator's")
    sub.add_parser("declare", help="create or update every stream and durable consumer, as the admin user")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.nats_action == "config":
        print(render_authorization(), end="")
    elif args.nats_action == "secrets":
        users = ensure_passwords(args.file)
        print(f"{args.file}: a password for each of {', '.join(users)} (mode 0600; keep it out of git)")
    else:
        asyncio.run(declare_layout(operator_settings(settings)))
        print("streams and durable consumers declared")
    return 0
