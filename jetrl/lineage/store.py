"""LineageStore: the lineage database, one object per role, each on the same engine.

    store.runs      runs: create, read, move their state                    (jetrl.lineage.runs)
    store.groups    admitting groups, their state, the queries admission uses (jetrl.lineage.groups)
    store.samples   recording samples, partials and segments; a group read back (jetrl.lineage.samples)
    store.batches   rewards, sealing batches, a batch as the trainer gets it  (jetrl.lineage.batches)
    store.versions  policy versions the trainer announced, the EMA teacher   (jetrl.lineage.versions)
    store.reports   what a person reads back: evaluations, dead letters, stats (jetrl.lineage.reports)

Writes are idempotent (keyed inserts with ON CONFLICT DO NOTHING, and state updates that only
move forward), so the recorder may see any event twice. Each method is one transaction; where one
takes row locks it takes the group's row before its samples, the order `record_samples` takes them in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from jetrl.lineage.batches import Batches
from jetrl.lineage.db import check_database, make_engine
from jetrl.lineage.groups import Groups
from jetrl.lineage.reports import Reports
from jetrl.lineage.runs import Runs
from jetrl.lineage.samples import Samples
from jetrl.lineage.versions import Versions

__all__ = ["LineageStore", "open_store"]


class LineageStore:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self.runs = Runs(engine)
        self.groups = Groups(engine)
        self.samples = Samples(engine)
        self.batches = Batches(engine)
        self.versions = Versions(engine)
        self.reports = Reports(engine)


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[LineageStore]:
    """A store on an engine of its own, for a command that reads lineage and exits (`jetrl report`,
    `jetrl explain`, the demo's audit): the database checked reachable and migrated first
    (DatabaseUnreachable says what to do), the engine disposed after."""
    await check_database(url)
    engine = make_engine(url)
    try:
        yield LineageStore(engine)
    finally:
        await engine.dispose()
