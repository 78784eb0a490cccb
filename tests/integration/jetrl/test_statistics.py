"""The lineage tables' planner statistics (jetrl/lineage/statistics.py) on a real Postgres: a table
that grew is analyzed, and the lookups the scheduler makes on every fetch use its indexes again."""

import uuid

import pytest
from sqlalchemy import text

from bulk_lineage import insert_samples, plan_nodes
from jetrl.lineage import statistics
from jetrl.lineage.db import make_engine

GROUPS, G = 2500, 8


@pytest.fixture
async def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()


async def grown_run(engine) -> str:
    """A run of GROUPS groups of G samples, written in bulk as a run writes them: 20,000 samples."""
    return await grown_run_of(engine, GROUPS)


async def grown_run_of(engine, groups: int) -> str:
    """A run of `groups` scored groups of G samples each, written in bulk."""
    run_id = f"r{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO runs (run_id, name, spec_yaml, state, message, policy_version, total_steps, "
                "batch_groups, group_size, trace_id, created_at, updated_at) "
                "VALUES (:run, 't', '', 'RUNNING', '', 0, 1, 1, :g, '', now(), now())"
            ),
            {"run": run_id, "g": G},
        )
        await conn.execute(
            text(
                "INSERT INTO prompt_groups (group_id, run_id, n, prompt_id, admitted_version, state, view, "
                "traceparent, trace_id) SELECT :run || '.g' || n, :run, n, 'p' || n, 0, 'scored', 'main', '', '' "
                "FROM generate_series(1, :groups) AS n"
            ),
            {"run": run_id, "groups": groups},
        )
        await insert_samples(
            conn,
            "prompt_groups g, generate_series(0, :size - 1) AS i WHERE g.run_id = :run",
            {"run": run_id, "size": G},
            sample_id="g.group_id || '.' || i",
            run_id="g.run_id",
            group_id="g.group_id",
            index="i",
        )
    return run_id


async def test_a_grown_table_is_analyzed_and_a_fetchs_lookup_uses_its_index(engine):
    run_id = await grown_run(engine)
    await engine.dispose()  # the inserting backend reports its changes when it ends
    analyzed = await statistics.refresh(engine)
    assert {"samples", "prompt_groups"} <= set(analyzed), analyzed
    assert "samples" not in await statistics.stale_tables(engine)  # analyzed now: not again
    # the samples of a fetch's 64 scored groups (Batches.record_scored_groups asks this on every fetch)
    groups = ", ".join(f"'{run_id}.g{n}'" for n in range(1, 65))
    async with engine.connect() as conn:
        [[plan]] = (
            await conn.execute(
                text(f"EXPLAIN (FORMAT JSON) SELECT group_id, sample_id FROM samples WHERE group_id IN ({groups})")
            )
        ).one()
    assert ("Seq Scan", "samples") not in {(n["Node Type"], n.get("Relation Name")) for n in plan_nodes(plan["Plan"])}


async def test_a_runs_groups_by_state_are_read_from_one_index(engine):
    """Admission's counts and sealing's scored groups name the run and a state: one index serves
    both, where a run_id and a state index were two to write (migration 0006's (run_id, state),
    0007's (run_id, state, n), which also hands sealing a state's groups in admission order)."""
    await grown_run(engine)
    small = await grown_run_of(engine, 3)
    await engine.dispose()
    await statistics.refresh(engine)
    statements = [
        f"SELECT state, count(*) FROM prompt_groups WHERE run_id = '{small}' GROUP BY state",
        f"SELECT group_id FROM prompt_groups WHERE run_id = '{small}' AND state = 'scored' ORDER BY n LIMIT 2",
    ]
    async with engine.connect() as conn:
        for statement in statements:
            [[plan]] = (await conn.execute(text(f"EXPLAIN (FORMAT JSON) {statement}"))).one()
            used = {n.get("Index Name") for n in plan_nodes(plan["Plan"])}
            assert "ix_prompt_groups_run_id_state_n" in used, (statement, plan)
