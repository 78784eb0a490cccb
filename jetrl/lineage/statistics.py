"""Planner statistics of the tables lineage writes in bulk, kept fresh by the scheduler.

Postgres plans every query from the statistics ANALYZE gathers. Autovacuum keeps them fresh, but it
may be off (it is on this project's development machine and CI), and when it is on it still lags
a run that writes thousands of rows a second. A table never analyzed is planned blind: Postgres
assumes each key matches 0.5% of it, so looking up the samples of 64 groups looks like a third of
the table, and it reads the whole table, every run's rows, instead of the index. Measured in a
database of 109,000 samples: one such statement 140 ms, the reward rows of a batch 27 ms, once per
fetch and per version; after ANALYZE no statement of a run read a whole table, and Postgres's CPU
per sample fell from 0.57–0.88 ms to 0.41.

`refresh` analyzes each of these tables once the rows changed since its last analysis reach a
tenth of it (at least MIN_CHANGES), the rule autovacuum applies by default; the scheduler calls it
when it starts and on every reconcile tick. It samples STATISTICS_TARGET × 300 rows, not
Postgres's default 30,000: a key lookup needs to know roughly how many rows a key has, not its
exact distribution, and the samples table's arrays make a full ANALYZE of it cost a second of
Postgres's CPU at 115,000 rows (70 ms with this target; the lookups still use their indexes). A
user who may not analyze a table gets a warning from Postgres and the table is skipped, nothing
fails.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["TABLES", "refresh", "stale_tables"]

TABLES = (
    "samples",
    "sample_segments",
    "rewards",
    "prompt_groups",
    "prompts",
    "partial_samples",
    "batches",
    "policy_versions",
)
MIN_CHANGES = 500  # fewer changed rows than this never make a plan worse enough to pay an ANALYZE
SHARE = 0.1  # autovacuum_analyze_scale_factor's default
STATISTICS_TARGET = 10  # default_statistics_target for these ANALYZEs (Postgres's default: 100)


async def stale_tables(engine: AsyncEngine) -> list[str]:
    """The lineage tables whose statistics lag their rows: changed by at least SHARE of their
    rows (and MIN_CHANGES) since they were last analyzed, or never analyzed and not empty."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT s.relname, s.n_mod_since_analyze, c.reltuples FROM pg_stat_user_tables s "
                "JOIN pg_class c ON c.oid = s.relid "
                "WHERE s.schemaname = current_schema() AND s.relname = ANY(:names) ORDER BY s.relname"
            ),
            {"names": list(TABLES)},
        )
        return [name for name, changed, tuples in rows if changed >= max(MIN_CHANGES, SHARE * max(tuples, 0))]


async def refresh(engine: AsyncEngine) -> list[str]:
    """ANALYZE the stale lineage tables (`stale_tables`); the ones analyzed. ANALYZE reads a
    sample of each table and takes no lock that holds back reads or writes."""
    if not (stale := await stale_tables(engine)):
        return []
    async with engine.begin() as conn:
        await conn.execute(text(f"SET LOCAL default_statistics_target = {STATISTICS_TARGET}"))
        # the names come from TABLES, never from outside
        await conn.execute(text(f"ANALYZE {', '.join(stale)}"))
    return stale
