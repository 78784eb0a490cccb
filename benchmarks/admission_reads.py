"""What admission reads per decision, against the length of the run, side by side in one run.

Admission decides several times a version (after each fetch of rollouts or scored groups, after
each version). It used to read the run's row, count every group of the run by state and count the
batches: three statements, the middle one over every group the run ever had. It now reads one
AdmissionView (jetrl/lineage/groups.py), whose counts go through indexes over the groups still
moving. This builds runs of N groups (all but 100 trained, 50 generating, 50 generated; N / 32
sealed batches, B = 32) and times both, alternating, on the same database.

Run:  .venv/bin/python benchmarks/admission_reads.py [--groups 2000 20000 200000] [--database-url URL]
It works in database `jetrl_scale` on JETRL_DATABASE_URL's server (made and migrated if missing),
and deletes the runs it made when it is done.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.engine import make_url

from jetrl.config import Settings
from jetrl.lineage.db import ensure_database, make_engine, migrate
from jetrl.lineage.store import LineageStore

B, REPEATS = 32, 40


async def make_run(store: LineageStore, groups: int) -> str:
    """A run of `groups` groups as far into its life as they make it: every sealed batch trained."""
    run_id = f"scale-{uuid.uuid4().hex[:8]}"
    sealed = (groups - 100) // B
    await store.runs.create_run(run_id, "scale", "", total_steps=10**6, batch_groups=B, group_size=8, trace_id="")
    async with store.engine.begin() as conn:
        await conn.execute(text("UPDATE runs SET policy_version = :v WHERE run_id = :r"), {"v": sealed, "r": run_id})
        await conn.execute(
            text(
                "INSERT INTO prompt_groups (group_id, run_id, n, prompt_id, admitted_version, state, attempt,"
                " attempt_version, recycled, view, traceparent, trace_id)"
                " SELECT :r || '.g' || i, :r, i, 'p', 0, CASE WHEN i < :t THEN 'trained'"
                " WHEN i < :t + 50 THEN 'generated' ELSE 'admitted' END, 0, 0, 0, 'main', '', ''"
                " FROM generate_series(0, :n - 1) AS i"
            ),
            {"r": run_id, "n": groups, "t": sealed * B},
        )
        await conn.execute(
            text(
                "INSERT INTO batches (batch_id, run_id, step, policy_version, trace_id)"
                " SELECT :r || '.b' || i, :r, i, i, '' FROM generate_series(0, :s - 1) AS i"
            ),
            {"r": run_id, "s": sealed},
        )
    async with store.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE prompt_groups, batches"))
    return run_id


async def before(store: LineageStore, run_id: str) -> tuple[int, int, int]:
    """The three reads admission made before AdmissionView: (running, accepted, next group)."""
    record = await store.runs.get_run(run_id)
    counts = await store.groups.group_counts(run_id)
    await store.batches.batches_sealed(run_id)  # read whenever groups could start (stale partials)
    accepted = sum(counts[s] for s in ("generated", "scored", "batched", "trained"))
    assert record is not None
    return counts["admitted"], accepted, sum(counts.values())


async def after(store: LineageStore, run_id: str) -> tuple[int, int, int]:
    view = await store.groups.admission_view(run_id)
    assert view is not None
    return view.admitted, view.accepted(B), view.groups


async def measure(url: str, sizes: list[int]) -> list[tuple[int, float, float]]:
    engine = make_engine(url)
    store, rows, made = LineageStore(engine), [], []
    try:
        for groups in sizes:
            run_id = await make_run(store, groups)
            made.append(run_id)
            assert await before(store, run_id) == await after(store, run_id), "the two reads disagree"
            took: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(REPEATS):
                for name, read in (("before", before), ("after", after)):
                    start = time.perf_counter()
                    await read(store, run_id)
                    took[name].append((time.perf_counter() - start) * 1000)
            rows.append((groups, statistics.median(took["before"][5:]), statistics.median(took["after"][5:])))
    finally:
        async with engine.begin() as conn:  # the groups and batches go with them (ON DELETE CASCADE)
            await conn.execute(text("DELETE FROM runs WHERE run_id = ANY(:ids)"), {"ids": made})
        await engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, nargs="+", default=[2000, 20000, 200000])
    parser.add_argument("--database-url", default=None, help="default: JETRL_DATABASE_URL's server, db jetrl_scale")
    args = parser.parse_args()
    url = args.database_url or make_url(Settings().database_url).set(database="jetrl_scale").render_as_string(False)
    ensure_database(url)
    migrate(url)
    table = Table(title="admission's reads per decision (median of 35, ms)")
    for column in ("groups in the run", "before: run, counts by state, batches", "after: AdmissionView", "ratio"):
        table.add_column(column, justify="right")
    for groups, old, new in asyncio.run(measure(url, args.groups)):
        table.add_row(f"{groups:,}", f"{old:.2f}", f"{new:.2f}", f"{old / new:.1f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
