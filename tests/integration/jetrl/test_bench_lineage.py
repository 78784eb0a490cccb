"""The benchmarks' lineage reads on a real Postgres: `jetrl bench async`'s steady-state metrics and
accuracy curve of a seeded run, the version timestamps of `bench control-plane` and `bench peer`
(the rest of the bench tests need no service: tests/unit/jetrl/test_bench*.py)."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import MetaData, Table, create_engine

from jetrl.bench.control_plane_rows import VersionTimes, read_versions
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


def test_version_times_from_lineage(database_url):
    """Each version dated by its batch's path: the newest group admitted (and the version it was
    admitted at), the newest sample recorded, the newest reward recorded, the batch sealed."""
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def at(ms: float) -> datetime:
        return t0 + timedelta(milliseconds=ms)

    engine = create_engine(database_url)
    meta = MetaData()
    names = ("runs", "prompt_groups", "samples", "rewards", "batches", "policy_versions")
    t = {n: Table(n, meta, autoload_with=engine) for n in names}
    with engine.begin() as conn:
        run = dict(run_id=run_id, name="b", spec_yaml="", state="COMPLETED", message="", policy_version=2)
        run |= dict(total_steps=2, batch_groups=2, group_size=1, trace_id="", created_at=t0, updated_at=t0)
        _insert(conn, t["runs"], [run])
        # (n, admitted at ms, at version, batch): version 1 trains groups 0-1, version 2 groups 2-3
        groups = [(0, 5, 0, 0), (1, 8, 0, 0), (2, 300, 1, 1), (3, 290, 1, 1)]
        _insert(
            conn,
            t["prompt_groups"],
            [
                _group_row(run_id, f"{run_id}.g{n}", n, step=b, batch_id=f"{run_id}.b{b}", admitted_version=v)
                | dict(created_at=at(ms))
                for n, ms, v, b in groups
            ],
        )
        # (group n, recorded at ms, trained into, reward recorded at ms or None)
        samples = [(0, 60, 1, 110), (1, 90, 1, 140), (2, 380, 2, None), (3, 350, 2, None)]
        _insert(
            conn,
            t["samples"],
            [
                _sample_row(run_id, f"{run_id}.g{n}", f"{run_id}.s{n}", 0, 2, 0, trained_version=tv)
                | dict(created_at=at(ms))
                for n, ms, tv, _ in samples
            ],
        )
        # (sample n, server, recorded at ms): sample 0 scored by two servers still counts once
        rewards = [(n, "verify", ms) for n, _, _, ms in samples if ms is not None] + [(0, "judge", 100)]
        _insert(
            conn,
            t["rewards"],
            [
                dict(sample_id=f"{run_id}.s{n}", server=server, endpoint="", reward=1.0, created_at=at(ms))
                | dict(extracted_answer="", detail="", trace_id="")
                for n, server, ms in rewards
            ],
        )
        _insert(
            conn,
            t["batches"],
            [
                dict(batch_id=f"{run_id}.b{b}", run_id=run_id, step=b, policy_version=b, trace_id="", created_at=at(ms))
                for b, ms in [(0, 150), (1, 400)]
            ],
        )
        _insert(
            conn,
            t["policy_versions"],
            [
                dict(run_id=run_id, version=v, parent_version=v - 1, batch_id=f"{run_id}.b{v - 1}", uri="", sha256="")
                | dict(size_bytes=0, metrics={}, samples_trained_total=2 * v, trace_id="", created_at=at(ms))
                for v, ms in [(1, 250), (2, 500)]
            ],
        )
    engine.dispose()

    def seconds(ms: float) -> float:
        return at(ms).timestamp()

    assert read_versions(database_url, run_id) == [
        VersionTimes(0, t0.timestamp(), 0),
        VersionTimes(1, seconds(250), 2, seconds(90), seconds(150), seconds(8), 0, seconds(140)),
        VersionTimes(2, seconds(500), 2, seconds(380), seconds(400), seconds(300), 1, None),
    ]
