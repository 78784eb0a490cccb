"""Lineage grown in bulk by one SQL statement, for the tests of what Postgres does with a large
database (tens of thousands of samples in a second), and the nodes of the plan it chose."""

from sqlalchemy import text
from sqlalchemy.dialects import postgresql


async def insert_samples(
    conn, source: str, params: dict, *, sample_id: str, run_id: str, group_id: str, index: str, trained: str = "NULL"
) -> None:
    """A finished two-token sample ("2" then EOS, version 0) per row of `source` (a FROM clause,
    with its WHERE); its key columns and trained version are SQL expressions over those rows."""
    await conn.execute(
        text(
            "INSERT INTO samples (sample_id, run_id, group_id, index, trained_version, prompt_token_ids, "
            "completion_token_ids, logprobs, token_versions, min_version, max_version, text, finish_reason, "
            f"worker_id, trace_id) SELECT {sample_id}, {run_id}, {group_id}, {index}, {trained}, '{{5,6}}', "
            f"'{{7,2}}', '{{-0.5,-0.25}}', '{{0,0}}', 0, 0, '2', 'eos', 'w', '' FROM {source}"
        ),
        params,
    )


def plan_nodes(plan: dict):
    """Every node of an EXPLAIN (FORMAT JSON) plan, the root first."""
    yield plan
    for child in plan.get("Plans", ()):
        yield from plan_nodes(child)


async def explain_analyze(conn, statement) -> dict:
    """The EXPLAIN (ANALYZE, FORMAT JSON) plan of a SQLAlchemy statement, its parameters inlined."""
    sql = statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    [[plan]] = (await conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"))).one()
    return plan


def rows_read(plan: dict, relation: str) -> int:
    """The rows of `relation` an EXPLAIN (ANALYZE, FORMAT JSON) plan read, those filtered out included."""
    return sum(
        (n["Actual Rows"] + n.get("Rows Removed by Filter", 0)) * n["Actual Loops"]
        for n in plan_nodes(plan["Plan"])
        if n.get("Relation Name") == relation
    )
