"""EngineRole: what every role of the lineage store (jetrl.lineage.store) is built on: the engine
they share, the connection each transaction runs on (`begin`, `connect`, a lent one where
`lending` is open), the two transactions many of their methods are: one idempotent insert, one
read; and `table_of`, rows of values as a table one statement joins (a set-based UPDATE)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ARRAY, Executable, bindparam, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

__all__ = ["EngineRole", "lending", "table_of"]


def table_of(name: str, rows: Sequence[tuple], **columns: TypeEngine) -> TableValuedAlias:
    """`rows` (at least one: tuples of the `columns`' values, in their order; columns: name ->
    type) as table `name`, for the FROM of one statement: `unnest` of one array parameter per
    column. An UPDATE joining it changes any number of rows in one statement, where an
    executemany runs one per row."""
    arrays = [
        bindparam(f"{name}_{col}", list(vals), type_=ARRAY(kind))
        for (col, kind), vals in zip(columns.items(), zip(*rows), strict=True)
    ]
    return func.unnest(*arrays).table_valued(*columns).render_derived(name=name)


@dataclass
class _Lent:
    """A connection `lending` checked out, and whether a transaction is on it now."""

    engine: AsyncEngine
    conn: AsyncConnection
    busy: bool = False
    open: bool = True


_lent: ContextVar[_Lent | None] = ContextVar("jetrl_lineage_lent", default=None)
AUTOCOMMIT = "AUTOCOMMIT"  # SQLAlchemy's isolation level for a DBAPI connection in autocommit


@asynccontextmanager
async def lending(engine: AsyncEngine) -> AsyncIterator[None]:
    """Inside the block, the lineage calls this task makes on `engine` run one after another on one
    connection, checked out (and pre-pinged) once, each still its own transaction.

    A handler makes a dozen store calls per event; each checking a pooled connection out, pinging
    it and resetting it on return cost 0.65 ms of client CPU and two statements (docs/performance.md).
    A call made while the lent connection is in a transaction (a task the handler started, running
    beside it) or after the block checks one out of the pool as before. Nested blocks share the
    outer one's connection. An error leaves the connection as `begin` and `connect` do: rolled back,
    and invalidated if the server went away (the next call then checks out a fresh one).
    """
    if (outer := _lent.get()) is not None and outer.open and outer.engine is engine:
        yield
        return
    async with engine.connect() as conn:
        lent = _Lent(engine, conn)
        token = _lent.set(lent)
        try:
            yield
        finally:
            lent.open = False
            _lent.reset(token)


class EngineRole:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    def _lent(self) -> _Lent | None:
        lent = _lent.get()
        return lent if lent is not None and lent.open and not lent.busy and lent.engine is self.engine else None

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction of its own, committed when the block ends (rolled back
        on an error): the lent one where `lending` is open, else one from the pool."""
        if (lent := self._lent()) is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        lent.busy = True
        try:
            async with lent.conn.begin():
                yield lent.conn
        finally:
            lent.busy = False

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection to read on, in autocommit: the lent one where `lending` is open, else one
        from the pool. At READ COMMITTED (Postgres's default, which every transaction here is
        written for) each statement reads a snapshot of its own inside a transaction or not, so a
        read's BEGIN and ROLLBACK were two round trips that bought nothing; most reads are one
        statement."""
        if (lent := self._lent()) is None:
            async with self.engine.connect() as conn:
                await conn.execution_options(isolation_level=AUTOCOMMIT)
                yield conn  # the pool gives it its default level back when it returns
            return
        lent.busy = True
        try:
            await lent.conn.execution_options(isolation_level=AUTOCOMMIT)
            try:
                yield lent.conn
            finally:
                await lent.conn.rollback()  # ends SQLAlchemy's own marker; nothing is sent in autocommit
                await lent.conn.execution_options(isolation_level=lent.conn.default_isolation_level)
        finally:
            lent.busy = False

    async def insert_once(self, table: Any, **values: Any) -> None:
        """One row, in a transaction of its own; where its key is already there nothing changes
        (the recorder may see an event twice)."""
        async with self.begin() as conn:
            await conn.execute(insert(table).values(**values).on_conflict_do_nothing())

    async def rows(self, statement: Executable) -> list:
        """Every row `statement` reads, on a connection of its own."""
        async with self.connect() as conn:
            return list(await conn.execute(statement))
