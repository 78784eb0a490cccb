"""`jetrl bench async` without services: the ideal bound, the steady-state window, the command
line and outputs (its lineage reads, on a real Postgres: tests/integration/jetrl/test_bench_lineage.py)."""

import argparse
import math

import numpy as np
import pytest

from jetrl.bench.async_cli import add_arguments
from jetrl.bench.configs import CONFIGS
from jetrl.bench.metrics import expected_length, ideal_bound, steady_window, time_to_target
from jetrl.bench.real import real_spec
from jetrl.bench.report import SIM_COLUMNS, markdown_table, out_dir, plot, require_plotting
from jetrl.bench.sim import sim_spec, simulation_from
from jetrl.bench.stack import RunRecord, bench_database_url
from jetrl.cli.main import _parser
from jetrl.config import Settings, load_spec
from jetrl.examples import DEMO_SPEC
from jetrl.spec_sections import SimulationSpec
from svc_rollout.simulated import target_length


def bench_args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["bench", "async", *argv])


# ---- ideal bound ------------------------------------------------------------------------------


def test_ideal_bound_hand_worked_with_exact_lengths():
    # σ = 0: every completion is exactly 40 tokens, so a batch of B·G = 4·8 samples is 1280 tokens;
    # the trainer takes 0.1 + 0.0004·1280 = 0.612 s for it: 2091.5 tok/s; the generator could
    # do 512 / 0.005 = 102,400 tok/s, so the trainer bounds the pipeline.
    sim = SimulationSpec(
        decode_step_s=0.005,
        capacity=512,
        length_median=40,
        length_sigma=0.0,
        max_length=512,
        train_s_per_token=0.0004,
        train_s_per_step=0.1,
    )
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


# ---- command line, specs, outputs -------------------------------------------------------------


def test_configurations_and_arguments():
    assert {n: (c.max_staleness, c.over_provision, c.recycled_staleness) for n, c in CONFIGS.items()} == {
        "sync": (0, 1.0, None),
        "sync-april": (0, 2.0, None),
        "sync-april-r1": (0, 2.0, 1),
        "async-1": (1, 1.0, None),
        "async-2": (2, 1.0, None),
        "async-4": (4, 1.0, None),
        "async-8": (8, 1.0, None),
        "async-april": (4, 2.0, None),
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
    assert sync.simulation.train_s_per_token == 0.0004
    recycling = sim_spec(CONFIGS["sync-april-r1"], args, tmp_path, sim)
    assert (recycling.schedule.max_staleness, recycling.schedule.recycled_staleness) == (0, 1)
    generation_bound = simulation_from(bench_args("--scenario", "generation-bound"))
    assert generation_bound.train_s_per_token == 0.00005
    assert (
        simulation_from(bench_args("--scenario", "generation-bound", "--train-s-per-token", "0.001")).train_s_per_token
        == 0.001
    )


def test_real_spec_is_the_demo_with_eta_and_eval_every_5(tmp_path):
    base = load_spec(DEMO_SPEC)
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
    rows = [
        {
            "config": "sync",
            "max_staleness": 0,
            "over_provision": 1.0,
            "train_tps": 900.0,
            "rollout_tps": 950.0,
            "utilisation": 0.5,
            "speedup": 1.0,
            "ideal_ratio": 0.36,
        },
        {
            "config": "async-4",
            "max_staleness": 4,
            "over_provision": 1.0,
            "train_tps": 2400.0,
            "rollout_tps": 2500.0,
            "mean_staleness": None,
            "speedup": 2.67,
        },
    ]
    md = markdown_table(rows, SIM_COLUMNS, "caption")
    lines = md.splitlines()
    assert len(lines[0].split("|")) == len(SIM_COLUMNS) + 2 and lines[-1] == "caption"
    assert "| async-4 | 4 | 1 | 2,400 | 2,500 | - |" in md and "| 2.67 | - |" in md
    out = tmp_path / "img" / "bench.png"
    plot(out, rows, 2500.0, "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_outputs_go_under_out_default_data_dir(monkeypatch, tmp_path):
    # not the working directory's docs/: $JETRL_DATA_DIR/bench unless --out says otherwise
    monkeypatch.setenv("JETRL_DATA_DIR", str(tmp_path / "data"))
    assert out_dir(bench_args()) == tmp_path / "data" / "bench"
    assert out_dir(bench_args("--out", str(tmp_path / "mine"))) == tmp_path / "mine"
    args = bench_args()
    assert (args.json, args.plot, args.markdown) == (None, None, None)  # each file defaults to one under DIR
    standalone = argparse.ArgumentParser()
    add_arguments(standalone)
    assert "$JETRL_DATA_DIR/bench" in standalone.format_help()  # the default is documented in --help


def test_plots_without_matplotlib_name_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(SystemExit, match=r"jetrl\[bench\]"):
        require_plotting()
