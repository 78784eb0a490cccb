"""`jetrl bench control-plane` without services: its options and run spec, the CPU and profile
parsing, the arithmetic of its figures, its targets and outputs (the whole bench on a private
stack: tests/e2e/test_bench_control_plane.py)."""

import argparse
import json
from collections import Counter
from pathlib import Path

import pytest

from jetrl.bench.control_plane import cp_spec
from jetrl.bench.control_plane import run as run_bench
from jetrl.bench.control_plane_procs import (
    POSTGRES,
    Proc,
    cpu_delta,
    parse_stat,
    py_spy,
    read_profile,
    summary,
    tree_ticks,
)
from jetrl.bench.control_plane_raw import RawRates
from jetrl.bench.control_plane_report import cpu_rows, report, targets
from jetrl.bench.control_plane_rows import (
    STACK,
    VersionTimes,
    overheads,
    per_1k,
    quantile,
    result_row,
    sample_window,
)
from jetrl.bench.stack import RunRecord
from jetrl.cli.main import _parser


def bench_args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["bench", "control-plane", *argv])


# ---- options and spec -------------------------------------------------------------------------


def test_defaults_are_the_issue_s():
    args = bench_args()
    assert args.benchmark == "control-plane"
    assert args.workers == [1, 2, 4]
    assert (args.steps, args.warmup, args.batch_groups, args.group_size) == (16, 2, 32, 8)
    assert (args.length, args.max_staleness, args.rollout_concurrency) == (8, 4, 512)
    assert args.profile is None and args.out is None and args.json is None


def test_options_parse():
    args = bench_args("--workers", "1", "3", "--steps", "5", "--length", "4", "--profile", "p", "--raw-messages", "10")
    assert args.workers == [1, 3] and args.steps == 5 and args.length == 4
    assert args.profile == Path("p") and args.raw_messages == 10


def test_spec_has_free_engines_and_fixed_lengths(tmp_path):
    args = bench_args("--steps", "6", "--length", "5", "--batch-groups", "3", "--group-size", "2")
    spec = cp_spec(args, 2, tmp_path)
    assert spec.name == "bench-control-plane-w2"
    assert spec.train.steps == 6 and spec.train.batch_groups == 3 and spec.rollout.group_size == 2
    assert spec.rollout.max_new_tokens == 5 and spec.schedule.max_staleness == 4 and spec.schedule.eval_every == 0
    sim = spec.simulation
    assert sim is not None
    assert (sim.length_median, sim.length_sigma, sim.max_length) == (5, 0.0, 5)
    assert sim.train_s_per_token == 0.0 and sim.train_s_per_step == 0.0 and 0 < sim.decode_step_s <= 1e-4
    warm = cp_spec(args, 2, tmp_path, warm_up=True)
    assert warm.name == "bench-control-plane-w2-warm-up" and warm.train.steps < spec.train.steps


@pytest.mark.parametrize(
    "argv, message",
    [(["--steps", "2", "--warmup", "2"], "must exceed --warmup"), (["--workers", "0", "2"], "at least 1")],
)
def test_bad_options_refused_before_any_stack(argv, message):
    with pytest.raises(SystemExit, match=message):
        run_bench(bench_args(*argv))


def test_profile_without_py_spy_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match="pip install py-spy"):
        py_spy()


# ---- CPU and profiles -------------------------------------------------------------------------


def test_parse_stat_counts_fields_from_the_last_parenthesis():
    # pid (comm) state ppid ... field 14 utime, 15 stime, 16 cutime, 17 cstime
    fields = ["S", "7"] + ["0"] * 9 + ["100", "20", "3", "4"] + ["0"] * 30
    proc = parse_stat("42 (odd (name) x) " + " ".join(fields))
    assert proc == Proc("odd (name) x", 7, 127)


def test_tree_ticks_include_descendants_only():
    table = {1: Proc("init", 0, 1000), 10: Proc("python", 1, 5), 11: Proc("python", 10, 7), 12: Proc("p", 11, 1)}
    table[20] = Proc("other", 1, 50)
    assert tree_ticks(table, 10) == 13
    assert tree_ticks(table, 12) == 1


def test_cpu_delta_keeps_processes_seen_twice():
    before = {"svc_scheduler": 1.0, POSTGRES: 10.0, "gone": 3.0}
    after = {"svc_scheduler": 3.5, POSTGRES: 12.0, "new": 1.0}
    assert cpu_delta(before, after) == {"svc_scheduler": 2.5, POSTGRES: 2.0}


RAW_PROFILE = [
    'process 9:"python -m svc_x";<module> (svc_x/__main__.py:6);run (jetrl/service.py:2);work (svc_x/a.py:3) 6',
    'process 9:"python -m svc_x";<module> (svc_x/__main__.py:6);run (jetrl/service.py:2);dump (json/encoder.py:9) 2',
    "<module> (svc_x/__main__.py:6);f (svc_x/a.py:1);f (svc_x/a.py:1) 2",  # recursion counts once
    "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:81) 50",
    "<module> (svc_x/__main__.py:6);EpollSelector.select (selectors.py:468) 40",
    "Thread._bootstrap (threading.py:1002);Condition.wait (threading.py:327) 9",
    "Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982) 9",
]


def test_profile_leaves_idle_samples_and_process_roots_out():
    profile = read_profile(RAW_PROFILE)
    assert profile.busy == 10
    assert profile.inclusive["<module> (svc_x/__main__.py:6)"] == 10
    assert profile.inclusive["f (svc_x/a.py:1)"] == 2
    assert profile.self == Counter({"work (svc_x/a.py:3)": 6, "dump (json/encoder.py:9)": 2, "f (svc_x/a.py:1)": 2})
    assert not any(f.startswith("process ") for f in profile.inclusive)
    text = summary("svc_x", profile)
    assert text.startswith("svc_x: 10 busy samples")
    inclusive = text.split("self:")[0]
    assert "100.0%  <module> (svc_x/__main__.py:6)" in inclusive and "json/encoder.py" not in inclusive
    assert "20.0%  dump (json/encoder.py:9)" in text.split("self:")[1]


# ---- figures ----------------------------------------------------------------------------------

# B·G = 10 samples a version; announcements at 10, 11, 12.5, 13, 14 s
VERSIONS = [
    VersionTimes(0, 0.0, 0),
    VersionTimes(1, 10.0, 10, last_sample=9.0, sealed=9.5),
    VersionTimes(2, 11.0, 10, last_sample=10.9, sealed=10.95),
    VersionTimes(3, 12.5, 10, last_sample=12.3, sealed=12.4),
    VersionTimes(4, 13.0, 10, last_sample=12.9, sealed=None),
    VersionTimes(5, 14.0, 10, last_sample=None, sealed=None),
]


def test_quantile_interpolates_between_ranks():
    assert quantile([], 0.5) is None
    assert quantile([3.0], 0.9) == 3.0
    assert quantile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert quantile([float(i) for i in range(11)], 0.9) == pytest.approx(9.0)


def test_window_counts_samples_after_the_warm_up_version():
    window = sample_window(VERSIONS, warmup=2)
    assert (window.first_version, window.last_version) == (2, 5)
    assert window.seconds == 3.0 and window.tokens == 30 and window.throughput == 10.0


def test_overheads_from_the_last_recorded_sample_split_at_sealing():
    parts = overheads(VERSIONS, warmup=2)
    assert parts["total"] == pytest.approx([0.2, 0.1])  # version 5 has no sample timestamp
    assert parts["to_seal"] == pytest.approx([0.1]) and parts["to_announce"] == pytest.approx([0.1])


def test_per_1k():
    assert per_1k({"a": 3.0}, 1500) == {"a": 2.0}
    assert per_1k({"a": 3.0}, 0) == {"a": None}


RAW = RawRates(sample_bytes=250, messages=1000, publish_s=0.1, consume_s=0.2)  # 10,000 and 5,000 msgs/s


def _row(workers: int, state: str = "COMPLETED", versions=VERSIONS) -> dict:
    record = RunRecord(f"run-w{workers}", state=state, wall_s=5.0)
    cpu = {"svc_scheduler": 2.0, "svc_rollout": 1.0, "nats-server": 0.5, POSTGRES: 4.0}
    return result_row(workers, record, cpu, versions, 1, RAW)


def test_result_row_ratios_and_cpu():
    row = _row(1)
    assert row["samples_trained"] == 50 and row["window_samples"] == 40
    assert row["samples_per_s"] == pytest.approx(10.0)  # versions 2..5 in the 4 s from version 1's announcement
    assert row["of_raw_publish"] == pytest.approx(row["samples_per_s"] / 10_000)
    assert row["of_raw_consume"] == pytest.approx(row["samples_per_s"] / 5_000)
    assert row["overhead_p50_ms"] == pytest.approx(100.0) and row["overhead_p90_ms"] == pytest.approx(180.0)
    assert row["cpu_s"][STACK] == 3.5  # Postgres is the whole server: not in the stack's total
    assert row["cpu_s_per_1k"]["svc_scheduler"] == pytest.approx(40.0) and row["stack_cpu_s_per_1k"] == 70.0


def test_a_failed_run_has_no_rates():
    row = _row(1, state="FAILED", versions=VERSIONS[:2])
    assert row["state"] == "FAILED" and "samples_per_s" not in row and row["samples_trained"] == 10


def test_targets_are_judged_from_the_figures():
    slow, fast = {"workers": 1, "samples_per_s": 150.0}, {"workers": 2, "samples_per_s": 2500.0}
    slow |= {"of_raw_publish": 0.01, "overhead_p50_ms": 400.0}
    fast |= {"of_raw_publish": 0.2, "overhead_p50_ms": 20.0}
    goals = targets([slow, fast])
    assert [g["met"] for g in goals] == [False, False, False, True, True, True, True]
    assert goals[-1]["measured"] == "150 -> 2,500" and goals[-1]["workers"] == "1 -> 2"
    assert targets([fast, slow | {"workers": 4}])[-1]["met"] is False  # must grow at every step
    unknown = targets([{"workers": 1}, fast])
    assert unknown[0]["met"] is None and unknown[-1]["met"] is None
    assert len(targets([slow])) == 3  # no growth to judge with one count


def test_cpu_rows_one_per_process_services_first():
    rows = [_row(1), _row(2) | {"cpu_s": {"svc_rollout-2": 1.0}, "cpu_s_per_1k": {"svc_rollout-2": 20.0}}]
    table = cpu_rows(rows)
    assert [r["config"] for r in table] == [
        "svc_rollout",
        "svc_rollout-2",
        "svc_scheduler",
        "nats-server",
        STACK,
        POSTGRES,
    ]
    rollout2 = table[1]
    assert rollout2["w1_cpu_s"] is None and rollout2["w2_cpu_s"] == 1.0 and rollout2["w2_per_1k"] == 20.0


def test_report_writes_json_and_markdown(tmp_path, capsys):
    args = bench_args("--workers", "1", "2", "--out", str(tmp_path), "--markdown", str(tmp_path / "cp.md"))
    report(args, [_row(1), _row(2)], RAW)
    payload = json.loads((tmp_path / "control_plane.json").read_text())
    assert payload["benchmark"] == "control-plane" and payload["raw"]["sample_bytes"] == 250
    assert payload["raw"]["publish_rate"] == pytest.approx(10_000)
    assert [r["workers"] for r in payload["results"]] == [1, 2] and payload["parameters"]["length"] == 8
    assert {g["met"] for g in payload["targets"]} <= {True, False, None}
    markdown = (tmp_path / "cp.md").read_text()
    assert "### targets" in markdown and "not met" in markdown and POSTGRES in markdown
    assert "samples/s" in capsys.readouterr().out
