"""`jetrl bench async`'s lineage reads on a real Postgres: a seeded run's steady-state metrics and
its accuracy curve (the rest of the bench tests need no service: tests/unit/jetrl/test_bench.py)."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import MetaData, Table, create_engine

from jetrl.bench.metrics import read_accuracy_curve, read_run_metrics


def _insert(conn, table: Table, rows: list[dict]) -> None:
    """Insert rows given as dicts of column values."""
    conn.execute(table.insert(), rows)


def _group_row(run_id: str, group_id: str, n: int, **columns) -> dict:
    """A prompt_groups row of the run with what no test here varies filled in."""
    base = dict(
        group_id=group_id,
        run_id=run_id,
        n=n,
        prompt_id=f"p{n}",
        admitted_version=0,
        state="trained",
        view="main",
        traceparent="",
        trace_id="",
    )
    return base | columns


def _sample_row(run_id: str, group_id: str, sample_id: str, index: int, length: int, version: int, **columns) -> dict:
    """A finished samples row of `length` tokens all from `version`, the rest as given."""
    base = dict(
        sample_id=sample_id,
        run_id=run_id,
        group_id=group_id,
        index=index,
        prompt_token_ids=[1],
        completion_token_ids=[5] * length,
        logprobs=[-0.5] * length,
        token_versions=[version] * length,
        min_version=version,
        max_version=version,
        text="",
        finish_reason="eos",
        worker_id="w",
        trace_id="",
    )
    return base | columns


def _seed_run(url: str) -> str:
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    t0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    engine = create_engine(url)
    meta = MetaData()
    t = {
        n: Table(n, meta, autoload_with=engine)
        for n in ("runs", "prompt_groups", "samples", "policy_versions", "evaluations")
    }
    with engine.begin() as conn:
        _insert(
            conn,
            t["runs"],
            [
                dict(
                    run_id=run_id,
                    name="b",
                    spec_yaml="",
                    state="COMPLETED",
                    message="",
                    policy_version=4,
                    total_steps=4,
                    batch_groups=1,
                    group_size=2,
                    trace_id="",
                    created_at=t0,
                    updated_at=t0,
                )
            ],
        )
        groups = [_group_row(run_id, f"{run_id}.g{n}", n, step=n, recycled=r) for n, r in enumerate([2, 0, 1])]
        _insert(conn, t["prompt_groups"], groups)
        # (trained_version, min_version, length, trained_tokens, staleness, masked, offpolicy); the last is untrained
        samples = [
            (1, 0, 5, 5, 0, 0, 0),
            (3, 1, 10, 9, 1, 1, 9),
            (3, 2, 20, 20, 0, 0, 0),
            (4, 1, 30, 30, 2, 0, 30),
            (None, 3, 7, None, None, None, None),
        ]
        _insert(
            conn,
            t["samples"],
            [
                _sample_row(
                    run_id,
                    groups[i % 3]["group_id"],
                    f"{run_id}.s{i}",
                    i,
                    n,
                    mv,
                    trained_version=tv,
                    trained_tokens=tt,
                    staleness=st,
                    stale_masked_tokens=ma,
                    offpolicy_tokens=op,
                )
                for i, (tv, mv, n, tt, st, ma, op) in enumerate(samples)
            ],
        )
        _insert(
            conn,
            t["policy_versions"],
            [
                dict(
                    run_id=run_id,
                    version=v,
                    parent_version=v - 1,
                    batch_id=f"b{v}",
                    uri="",
                    sha256="",
                    size_bytes=0,
                    metrics={},
                    samples_trained_total=v,
                    trace_id="",
                    created_at=t0 + timedelta(seconds=s),
                )
                for v, s in [(1, 10), (2, 12), (3, 13), (4, 15)]
            ],
        )
        _insert(
            conn,
            t["evaluations"],
            [dict(run_id=run_id, version=v, correct=c, total=10, created_at=t0) for v, c in [(0, 1), (2, 7), (4, 6)]],
        )
    engine.dispose()
    return run_id


def test_run_metrics_from_lineage(database_url):
    run_id = _seed_run(database_url)
    m = read_run_metrics(database_url, run_id, warmup=2)
    assert (m.window.seconds, m.window.tokens) == (3.0, 9 + 20 + 30)  # trained tokens of v3 and v4
    assert m.mean_staleness == pytest.approx(0.75) and m.max_staleness == 2
    assert (m.stale_masked_tokens, m.offpolicy_tokens, m.recycled, m.groups_recycled) == (1, 39, 3, 2)
    curve = read_accuracy_curve(database_url, run_id)
    assert curve == [(0, 0.0, 0.1), (2, 12.0, 0.7), (4, 15.0, 0.6)]


def test_aborted_work_counts_what_aborted_attempts_finished_and_handed_back(database_url):
    """APRIL's spare work is every token an aborted attempt generated: the prefixes it handed back
    and the samples it finished before the abort (carried into the next attempt whole); of it,
    trained is the recycled tokens (prefix_len) less those the bound masked."""
    run_id = _seed_run(database_url)
    engine = create_engine(database_url)
    meta = MetaData()
    t = {n: Table(n, meta, autoload_with=engine) for n in ("prompt_groups", "samples", "sample_segments")}
    resumed, buffered, fresh = (f"{run_id}.a{n}" for n in range(3))
    with engine.begin() as conn:
        _insert(
            conn,
            t["prompt_groups"],
            [
                _group_row(run_id, g, 10 + i, state=state, attempt=attempt, recycled=attempt)
                for i, (g, state, attempt) in enumerate(
                    [(resumed, "trained", 1), (buffered, "partial", 0), (fresh, "trained", 0)]
                )
            ],
        )
        # (sample, group, prefix_len, length, masked): a finished before the abort, b resumed, c fresh
        trained = [("a", resumed, 4, 4, 0), ("b", resumed, 3, 6, 1), ("c", fresh, 0, 7, 0)]
        _insert(
            conn,
            t["samples"],
            [
                _sample_row(
                    run_id,
                    g,
                    f"{g}.{s}",
                    i,
                    n,
                    1,
                    trained_version=2,
                    trained_tokens=n - m,
                    staleness=0,
                    stale_masked_tokens=m,
                    offpolicy_tokens=0,
                    prefix_len=p,
                )
                for i, (s, g, p, n, m) in enumerate(trained)
            ],
        )
        # (sample, group, attempt, start, end, finish)
        segments = [
            ("a", resumed, 0, 0, 4, "eos"),
            ("b", resumed, 0, 0, 3, "aborted"),
            ("b", resumed, 1, 3, 6, "eos"),
            ("d", buffered, 0, 0, 5, "aborted"),
            ("c", fresh, 0, 0, 7, "eos"),
        ]
        _insert(
            conn,
            t["sample_segments"],
            [
                dict(
                    sample_id=f"{g}.{s}",
                    attempt=a,
                    run_id=run_id,
                    group_id=g,
                    worker_id="w",
                    start=b,
                    end=e,
                    min_version=1,
                    max_version=1,
                    finish_reason=f,
                )
                for s, g, a, b, e, f in segments
            ],
        )
    engine.dispose()
    m = read_run_metrics(database_url, run_id, warmup=2)
    assert (m.aborted_tokens, m.recycled_trained_tokens) == (4 + 3 + 5, 4 + 2)
    assert m.aborted_trained_share == pytest.approx(0.5)
