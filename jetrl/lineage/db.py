"""Connecting to the lineage database: engines, reachability checks and Alembic migrations.

`jetrl db upgrade` (and `jetrl up`) create the database when it is missing and migrate it to
the newest revision; services only check that it is reachable and migrated, and refuse to
start otherwise with a message saying what to run.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["DatabaseUnreachable", "make_engine", "ensure_database", "check_database", "migrate", "head_revision"]

MIGRATIONS = Path(__file__).with_name("migrations")


class DatabaseUnreachable(RuntimeError):
    """Postgres cannot be reached, or the lineage schema is missing or old."""


def _driver_url(url: str) -> str:
    """Accept plain `postgresql://` URLs too; jetrl always talks psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername != "postgresql+psycopg":
        raise DatabaseUnreachable(f"database URL {url!r} must be postgresql:// or postgresql+psycopg://")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> AsyncEngine:
    """An asyncio engine (psycopg 3) with a small pool; pre-ping survives a Postgres restart.

    A row-lock wait gives up after 15 s with an error (the event is retried) instead of hanging a
    handler, and with it everything waiting behind it, forever.
    """
    return create_async_engine(
        _driver_url(url),
        pool_size=5,
        max_overflow=5,
        pool_pre_ping=True,
        connect_args={"options": "-c lock_timeout=15000"},
    )


def _alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # '%' is ConfigParser's interpolation character; escape it for passwords that contain one
    config.set_main_option("sqlalchemy.url", _driver_url(url).replace("%", "%%"))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config("postgresql://x/x")).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration under {MIGRATIONS}")
    return head


def _unreachable(url: str, exc: Exception) -> DatabaseUnreachable:
    safe = make_url(_driver_url(url)).render_as_string(hide_password=True)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatabaseUnreachable(
        f"Postgres is unreachable at {safe}: {first}. Start Postgres or set JETRL_DATABASE_URL "
        "to a reachable server (postgresql+psycopg://user@host:5432/db)."
    )


def ensure_database(url: str) -> bool:
    """Create the database named in `url` when it does not exist; True when it was created."""
    import psycopg

    parsed = make_url(_driver_url(url))
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,)).fetchone():
                return False
            conn.execute(f'CREATE DATABASE "{parsed.database}"')
            return True
    except psycopg.Error as exc:
        raise _unreachable(url, exc) from None


def migrate(url: str) -> None:
    """Apply every Alembic migration up to the newest (idempotent)."""
    from alembic import command

    command.upgrade(_alembic_config(url), "head")


async def check_database(url: str) -> None:
    """Fail fast, with what to do, when the database is unreachable or not migrated."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            try:
                current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            except SQLAlchemyError:
                current = None
    except (SQLAlchemyError, OSError) as exc:
        raise _unreachable(url, exc) from None
    finally:
        await engine.dispose()
    if current != head_revision():
        raise DatabaseUnreachable(
            f"lineage schema is at revision {current or 'none'}, not {head_revision()}: run `jetrl db upgrade`"
        )
