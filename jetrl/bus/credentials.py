"""The NATS users' passwords: made at random, kept in an env file only its owner can read.

One file format for every deployment: `NATS_<USER>_PASSWORD=...` lines (permissions.
password_variable), the environment nats-server expands in the authorization block. `jetrl up`
keeps its own under $JETRL_DATA_DIR/nats-auth/ and starts its nats-server with it; `jetrl nats
secrets FILE` writes one for compose (`.env`) or for a k8s secretGenerator.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from jetrl.bus.permissions import ADMIN, USERS, password_variable
from jetrl.config import Settings


def new_password() -> str:
    # starts with a letter: nats-server reads an expanded variable as a config value, and digits
    # alone would be a number; url-safe characters are bare words to it
    return "jetrl-" + secrets.token_urlsafe(24)


def read_env_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines (comments and blank lines skipped)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def ensure_passwords(path: Path) -> dict[str, str]:
    """user -> password for every user, from `path`; the users it lacks get a new random one,
    appended (other lines are kept: it may be compose's .env). The file is readable by its owner
    only (0600, in a 0700 directory when new)."""
    text = path.read_text() if path.exists() else ""
    known = read_env_file(path) if path.exists() else {}
    missing = {user: new_password() for user in USERS if not known.get(password_variable(user))}
    if missing:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lines = [f"{password_variable(user)}={password}" for user, password in missing.items()]
        if not text:
            lines.insert(0, "# NATS passwords (jetrl nats secrets): keep this file private")
        # created 0600 before anything is written: the passwords are never readable by others
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as out:
            out.write(("\n" if text and not text.endswith("\n") else "") + "\n".join(lines) + "\n")
        os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT
    return {user: missing.get(user) or known[password_variable(user)] for user in USERS}


def server_env(passwords: dict[str, str]) -> dict[str, str]:
    """The environment nats-server needs to expand the authorization block."""
    return {password_variable(user): password for user, password in passwords.items()}


def as_user(settings: Settings, user: str, passwords: dict[str, str]) -> Settings:
    """`settings` connecting to NATS as `user` (a token, if any, dropped: one or the other)."""
    return settings.model_copy(update={"nats_user": user, "nats_password": passwords[user], "nats_token": None})


def as_admin(settings: Settings, passwords: dict[str, str]) -> Settings:
    return as_user(settings, ADMIN, passwords)
