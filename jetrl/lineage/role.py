"""EngineRole: what every role of the lineage store (jetrl.lineage.store) is built on: the engine
they share, and the two transactions many of their methods are: one idempotent insert, one read;
and `table_of`, rows of values as a table one statement joins (a set-based UPDATE)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ARRAY, Executable, bindparam, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

__all__ = ["EngineRole", "table_of"]


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


class EngineRole:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    async def insert_once(self, table: Any, **values: Any) -> None:
        """One row, in a transaction of its own; where its key is already there nothing changes
        (the recorder may see an event twice)."""
        async with self.engine.begin() as conn:
            await conn.execute(insert(table).values(**values).on_conflict_do_nothing())

    async def rows(self, statement: Executable) -> list:
        """Every row `statement` reads, on a connection of its own."""
        async with self.engine.connect() as conn:
            return list(await conn.execute(statement))
