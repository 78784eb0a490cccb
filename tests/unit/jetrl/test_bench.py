"""`jetrl bench async` without services: the ideal bound, the steady-state window, lineage reads
(on a real Postgres, at the newest schema and at the first one), the command line and outputs."""

import argparse
import math
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import MetaData, Table, create_engine

from jetrl.cli.bench import CONFIGS, add_arguments
from jetrl.cli.bench_metrics import (
    expected_length, ideal_bound, read_accuracy_curve, read_run_metrics, steady_window, time_to_target,
)
from jetrl.cli.bench_real import real_spec
from jetrl.cli.bench_report import SIM_COLUMNS, markdown_table, plot
from jetrl.cli.bench_runs import RunRecord, bench_database_url
from jetrl.cli.bench_sim import sim_spec, simulation_from
from jetrl.cli.main import DEFAULT_SPEC, _parser
from jetrl.config import Settings, SimulationSpec, load_spec
from svc_rollout.simulated import target_length


def bench_args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["bench", "async", *argv])


# ---- ideal bound ------------------------------------------------------------------------------

def test_ideal_bound_hand_worked_with_exact_lengths():
    # σ = 0: every completion is exactly 40 tokens, so a batch of B·G = 4·8 samples is 1280 tokens;
    # the trainer takes 0.1 + 0.0004·1280 = 0.612 s for it: 2091.5 tok/s; the generator could
    # do 512 / 0.005 = 102,400 tok/s, so the trainer bounds the pipeline.
    sim = SimulationSpec(decode_step_s=0.005, capacity=512, length_median=40, length_sigma=0.0, max_length=512,
                         train_s_per_token=0.0004, train_s_per_step=0.1)
    ideal = ideal_bound(sim, batch_groups=4, group_size=8)
    assert ideal.tokens_per_batch == 1280
    assert ideal.generator_tps == pytest.approx(102_400)
    assert ideal.trainer_tps == pytest.approx(1280 / 0.612)
    assert ideal.bound == pytest.approx(2091.50, abs=0.01) and ideal.limited_by == "trainer"
    slow = ideal_bound(sim.model_copy(update={"capacity": 4, "decode_step_s": 0.01}), 4, 8)
    assert slow.bound == pytest.approx(400) and slow.limited_by == "generator"
    free_trainer = sim.model_copy(update={"train_s_per_token": 0.0, "train_s_per_step": 0.0})
    assert ideal_bound(free_trainer, 4, 8).bound == 102_400


def test_expected_length_rounds_and_caps():
    assert expected_length(40.4, 0.0, 512) == 40
    assert expected_length(600, 0.0, 512) == 512
    assert expected_length(0.2, 0.0, 512) == 1  # at least one token
    assert expected_length(40, 1.0, 1) == 1
    # σ > 0: the formula against a large Monte Carlo sample of the same clamp
    draws = np.random.default_rng(0).lognormal(math.log(40), 1.0, 400_000)
    clamped = np.minimum(np.maximum(1, np.rint(draws)), 128)
    assert expected_length(40, 1.0, 128) == pytest.approx(clamped.mean(), rel=0.005)
    # the cap cuts the mean below the uncapped lognormal's 40·e^(1/2)
    assert expected_length(40, 1.0, 128) < 40 * math.exp(0.5)


def test_expected_length_is_what_the_simulated_engine_draws():
    sim = SimulationSpec(length_median=20, length_sigma=1.0, max_length=100)
    mean = np.mean([target_length(sim, seed) for seed in range(20_000)])
    assert mean == pytest.approx(expected_length(20, 1.0, 100), rel=0.02)


# ---- windows ----------------------------------------------------------------------------------

def test_steady_window_from_synthetic_versions():
    rows = [(0, 100.0, 0), (1, 103.0, 500), (2, 105.0, 600), (3, 106.0, 700), (4, 108.0, 800)]
    w = steady_window(rows, warmup=2)
    # from v2's announcement (105 s) to v4's (108 s); v3 and v4 trained inside it
    assert (w.first_version, w.last_version, w.seconds, w.tokens) == (2, 4, 3.0, 1500)
    assert w.throughput == pytest.approx(500.0)
    assert steady_window(rows, warmup=0).tokens == 2600
    with pytest.raises(ValueError, match="more steps than the warm-up"):
        steady_window(rows, warmup=4)
    with pytest.raises(ValueError, match="never announced"):
        steady_window(rows[3:], warmup=2)


def test_rollout_tps_between_snapshots():
    record = RunRecord("r", snapshots={0: (0.0, 0, 0.0), 2: (10.0, 1000, 5.0), 4: (14.0, 3000, 8.0)})
    assert record.rollout_tps(2) == pytest.approx(500.0)
    assert record.rollout_tps(1) == pytest.approx(500.0)  # v1 was not seen: from v2, the next one
    assert record.rollout_tps(3) is None  # only the last version was seen after v3


def test_time_to_target():
    curve = [(0, 0.0, 0.15), (5, 20.0, 0.5), (10, 41.0, 0.66), (15, 60.0, 0.6), (20, 80.0, 0.7)]
    assert time_to_target(curve, 0.65) == (10, 41.0)
    assert time_to_target(curve, 0.15) == (0, 0.0)
    assert time_to_target(curve, 0.9) is None


# ---- lineage ----------------------------------------------------------------------------------

def _insert(conn, table: Table, rows: list[dict]) -> None:
    """Insert rows given as dicts of column values."""
    conn.execute(table.insert(), rows)


def _seed_run(url: str) -> str:
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    t0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
    engine = create_engine(url)
    meta = MetaData()
    t = {n: Table(n, meta, autoload_with=engine)
         for n in ("runs", "prompt_groups", "samples", "policy_versions", "evaluations")}
    with engine.begin() as conn:
        _insert(conn, t["runs"], [dict(run_id=run_id, name="b", spec_yaml="", state="COMPLETED", message="",
                                       policy_version=4, total_steps=4, batch_groups=1, group_size=2, trace_id="",
                                       created_at=t0, updated_at=t0)])
        groups = [dict(group_id=f"{run_id}.g{n}", run_id=run_id, n=n, prompt_id=f"p{n}", step=n, admitted_version=0,
                       state="trained", view="main", traceparent="", trace_id="", recycled=r)
                  for n, r in enumerate([2, 0, 1])]
        _insert(conn, t["prompt_groups"], groups)
        # (trained_version, min_version, length, trained_tokens, staleness, masked, offpolicy); the last is untrained
        samples = [(1, 0, 5, 5, 0, 0, 0), (3, 1, 10, 9, 1, 1, 9), (3, 2, 20, 20, 0, 0, 0), (4, 1, 30, 30, 2, 0, 30),
                   (None, 3, 7, None, None, None, None)]
        _insert(conn, t["samples"], [dict(
            sample_id=f"{run_id}.s{i}", run_id=run_id, group_id=groups[i % 3]["group_id"], index=i,
            prompt_token_ids=[1], completion_token_ids=[5] * n, logprobs=[-0.5] * n, token_versions=[mv] * n,
            min_version=mv, max_version=mv, text="", finish_reason="eos", worker_id="w", trained_version=tv,
            trained_tokens=tt, staleness=st, stale_masked_tokens=ma, offpolicy_tokens=op, trace_id="",
        ) for i, (tv, mv, n, tt, st, ma, op) in enumerate(samples)])
        _insert(conn, t["policy_versions"], [dict(
            run_id=run_id, version=v, parent_version=v - 1, batch_id=f"b{v}", uri="", sha256="", size_bytes=0,
            metrics={}, samples_trained_total=v, trace_id="", created_at=t0 + timedelta(seconds=s),
        ) for v, s in [(1, 10), (2, 12), (3, 13), (4, 15)]])
        _insert(conn, t["evaluations"], [dict(run_id=run_id, version=v, correct=c, total=10, created_at=t0)
                                          for v, c in [(0, 1), (2, 7), (4, 6)]])
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


# ---- command line, specs, outputs -------------------------------------------------------------

def test_configurations_and_arguments():
    assert {n: (c.max_staleness, c.over_provision) for n, c in CONFIGS.items()} == {
        "sync": (0, 1.0), "sync-april": (0, 2.0), "async-1": (1, 1.0), "async-2": (2, 1.0), "async-4": (4, 1.0),
        "async-8": (8, 1.0), "async-april": (4, 2.0),
    }
    args = bench_args()
    assert args.configs == list(CONFIGS) and args.steps is None and not args.real
    assert (args.batch_groups, args.group_size, args.warmup, args.capacity, args.decode_step_s) == (4, 8, 2, 512, 0.005)
    args = bench_args("--configs", "sync", "async-4", "--steps", "4", "--length-sigma", "0.5")
    assert args.configs == ["sync", "async-4"] and args.steps == 4 and args.length_sigma == 0.5
    with pytest.raises(SystemExit):
        bench_args("--configs", "async-3")
    standalone = argparse.ArgumentParser()
    add_arguments(standalone)
    # benchmarks/async_bench.py takes the same options with the same defaults
    cli = {k: v for k, v in vars(bench_args()).items() if k not in ("command", "benchmark")}
    assert vars(standalone.parse_args([])) == cli
    assert standalone.parse_args(["--real", "--seeds", "0", "1"]).seeds == [0, 1]


def test_sim_spec_differs_only_in_schedule(tmp_path):
    args = bench_args("--steps", "5", "--max-length", "300")
    sim = simulation_from(args)
    sync, april = (sim_spec(CONFIGS[n], args, tmp_path, sim) for n in ("sync", "async-april"))
    assert (april.schedule.max_staleness, april.schedule.over_provision) == (4, 2.0)
    assert sync.model_dump(exclude={"name", "schedule"}) == april.model_dump(exclude={"name", "schedule"})
    assert sync.simulation.max_length == sync.rollout.max_new_tokens == 300
    assert (sync.train.steps, sync.train.batch_groups, sync.rollout.group_size) == (5, 4, 8)
    assert sync.schedule.eval_every == 0 and sync.schedule.max_concurrent == 1024


def test_real_spec_is_the_demo_with_eta_and_eval_every_5(tmp_path):
    base = load_spec(DEFAULT_SPEC)
    spec = real_spec(base, tmp_path, seed=3, eta=2, steps=None)
    assert (spec.seed, spec.schedule.max_staleness, spec.schedule.eval_every) == (3, 2, 5)
    assert spec.model.path == str(tmp_path) and spec.train == base.train and spec.task == base.task


def test_bench_database_url():
    args = bench_args()
    url = bench_database_url(args, Settings(database_url="postgresql://u:p@db:5433/jetrl"))
    assert url == "postgresql+psycopg://u:p@db:5433/jetrl_bench"
    args = bench_args("--database-url", "postgresql+psycopg://x@h/mine")
    assert bench_database_url(args, Settings()) == "postgresql+psycopg://x@h/mine"


def test_markdown_and_plot(tmp_path):
    rows = [{"config": "sync", "max_staleness": 0, "over_provision": 1.0, "train_tps": 900.0, "rollout_tps": 950.0,
             "utilisation": 0.5, "speedup": 1.0, "ideal_ratio": 0.36},
            {"config": "async-4", "max_staleness": 4, "over_provision": 1.0, "train_tps": 2400.0,
             "rollout_tps": 2500.0, "mean_staleness": None, "speedup": 2.67}]
    md = markdown_table(rows, SIM_COLUMNS, "caption")
    lines = md.splitlines()
    assert len(lines[0].split("|")) == len(SIM_COLUMNS) + 2 and lines[-1] == "caption"
    assert "| async-4 | 4 | 1 | 2,400 | 2,500 | - |" in md and "| 2.67 | - |" in md
    out = tmp_path / "img" / "bench.png"
    plot(out, rows, 2500.0, "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
