"""EngineRole: what every role of the lineage store (jetrl.lineage.store) is built on: the engine
they share, and the two transactions many of their methods are: one idempotent insert, one read."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Executable
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["EngineRole"]


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
