"""`jetrl bench peer` without services and without TRL: its options, the TRL arm's settings matched
to the demo's spec, its prompts, reward and evaluation points, the peak-memory reading, the jetrl
arm's figures from lineage timestamps, and the report (the whole bench on a private stack, with
TRL installed: tests/e2e/test_peer_bench_run.py)."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jetrl.bench import peer
from jetrl.bench.control_plane_procs import POSTGRES, Proc
from jetrl.bench.control_plane_rows import VersionTimes
from jetrl.bench.peer_jetrl import arm_row, batch_path, jetrl_row, peer_spec, time_split
from jetrl.bench.peer_procs import descendants, own_usage, parse_hwm_kb, peak_rss_mb, reset_peak
from jetrl.bench.peer_report import DIFFERENCES, TRL, add_ratios, criteria, curve_text, report_text
from jetrl.bench.peer_trl import HeldoutEval, check_matchable, config_kwargs, eval_versions, train_rows, verify_rewards
from jetrl.bench.stack import RunRecord
from jetrl.cli.main import _parser
from jetrl.config import RunSpec, load_spec
from jetrl.examples import DEMO_SPEC
from jetrl.tasks import make_task
from svc_reward.verify import score

REPO = Path(__file__).resolve().parents[3]


def bench_args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["bench", "peer", *argv])


def demo(seed: int = 0, eta: int = 0, steps: int | None = None) -> RunSpec:
    return peer_spec(load_spec(DEMO_SPEC), Path("/models/v0"), seed, eta, steps)


# ---- options and specs ------------------------------------------------------------------------


def test_defaults_and_options():
    args = bench_args()
    assert args.benchmark == "peer" and args.seeds == [0] and args.etas == [0, 2]
    assert args.target == 0.65 and args.steps is None and args.torch_threads == 0 and args.out is None
    args = bench_args("--seeds", "0", "1", "2", "--etas", "2", "--steps", "4", "--out", "o", "--logs", "l")
    assert args.seeds == [0, 1, 2] and args.etas == [2] and args.steps == 4
    assert args.out == Path("o") and args.logs == Path("l")


def test_without_trl_the_bench_names_the_extra_before_running_anything(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    with pytest.raises(SystemExit, match=r"jetrl\[peer\]|\.\[peer\]"):
        peer.run(bench_args("--steps", "1"))


def test_the_trl_arm_module_loads_without_trl():
    code = "import sys, jetrl.bench.peer_trl, jetrl.bench.peer; assert 'trl' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_peer_spec_is_the_demo_with_seed_staleness_and_steps():
    spec = demo(seed=2, eta=2, steps=4)
    base = load_spec(DEMO_SPEC)
    assert (spec.seed, spec.schedule.max_staleness, spec.train.steps) == (2, 2, 4)
    assert spec.model.path == "/models/v0" and spec.name == "peer-eta2-s2"
    assert spec.train == base.train.model_copy(update={"steps": 4}) and spec.rollout == base.rollout
    assert spec.schedule.eval_every == base.schedule.eval_every and demo().train.steps == base.train.steps


# ---- the TRL arm's settings -------------------------------------------------------------------


def test_trl_settings_match_the_demo_spec(tmp_path):
    spec = demo(seed=1)
    kw = config_kwargs(spec, tmp_path)
    assert kw["seed"] == 1 and kw["max_steps"] == 50 and kw["output_dir"] == str(tmp_path)
    assert kw["per_device_train_batch_size"] == 16 * 8 and kw["gradient_accumulation_steps"] == 1
    assert kw["num_generations"] == 8 and kw["max_completion_length"] == 6
    assert (kw["temperature"], kw["top_p"], kw["top_k"]) == (1.0, 1.0, 0)
    assert (kw["learning_rate"], kw["lr_scheduler_type"], kw["warmup_steps"]) == (2e-4, "constant", 0)
    assert (kw["optim"], kw["adam_beta1"], kw["adam_beta2"], kw["adam_epsilon"]) == ("adamw_torch", 0.9, 0.999, 1e-8)
    assert kw["weight_decay"] == 0.0 and kw["max_grad_norm"] == 1.0
    assert (kw["beta"], kw["epsilon"], kw["epsilon_high"], kw["num_iterations"]) == (0.0, 0.2, 0.2, 1)
    assert (kw["loss_type"], kw["scale_rewards"], kw["mask_truncated_completions"]) == ("bnpo", "group", False)
    assert kw["shuffle_dataset"] is False and kw["use_cpu"] is True
    assert kw["bf16"] is False and kw["fp16"] is False and kw["gradient_checkpointing"] is False
    assert kw["report_to"] == "none" and kw["save_strategy"] == "no"


@pytest.mark.parametrize(
    "section, field, value",
    [
        ("train", "minibatches", 2),
        ("train", "advantage", "rloo"),
        ("train", "loss_agg", "constant"),
        ("train", "lr_schedule", "cosine"),
        ("schedule", "over_provision", 2.0),
    ],
)
def test_a_spec_trl_cannot_match_is_refused(section, field, value):
    raw = demo().model_dump()
    raw[section][field] = value
    with pytest.raises(ValueError, match=field):
        check_matchable(RunSpec.model_validate(raw))


def test_trl_sees_the_prompts_of_jetrl_s_groups_in_order():
    spec = demo()
    task = make_task(spec.task)
    rows = train_rows(task, 3, 16)
    assert len(rows) == 48
    for n in (0, 15, 16, 47):  # group n of jetrl's scheduler trains problem n; step k is rows 16k..16k+15
        p = task.train_problem(n)
        assert rows[n] == {"prompt": p.prompt, "answer": p.answer}


@pytest.mark.parametrize("text", ["82", " 82", "82 ", "80+2=82", "83", "", "8", "82 and 7", "-82", "82.0", "1,8"])
def test_the_reward_is_the_verify_rule(text):
    assert verify_rewards([text], ["82"]) == [score("82", text).reward]


def test_rewards_pair_each_completion_with_its_answer():
    assert verify_rewards(["5", "5", "7"], ["5", "6", "7"], prompts=["x"] * 3, trainer_state=None) == [1.0, 0.0, 1.0]


def test_evaluated_versions_are_the_scheduler_s():
    assert eval_versions(50, 10) == [0, 10, 20, 30, 40, 50]
    assert eval_versions(45, 10) == [0, 10, 20, 30, 40, 45]
    assert eval_versions(4, 10) == [0, 4]
    assert eval_versions(3, 0) == [0, 3]


class _State:
    global_step = 0


class _Model:
    training = True

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode


def test_the_evaluation_callback_takes_its_time_out(monkeypatch):
    import jetrl.policy.generate as generate

    # start 0; v0 evaluated 0 -> 1; step 1 ends at 3; step 2 at 5, evaluated 5 -> 8; step 3 at 10, evaluated 10 -> 11
    clock = iter([0.0, 0.0, 1.0, 3.0, 5.0, 5.0, 8.0, 10.0, 10.0, 11.0])
    scores = iter([0.25, 0.5, 0.75])
    monkeypatch.setattr(generate, "heldout_accuracy", lambda *a, **kw: next(scores))
    model, state = _Model(), _State()
    cb = HeldoutEval(None, [], [0, 2, 3], max_new_tokens=6, clock=lambda: next(clock))
    cb.on_train_begin(None, state, None, model=model)
    for step in (1, 2, 3):
        state.global_step = step
        cb.on_step_end(None, state, None, model=model)
    assert model.training is True  # evaluated in eval mode, handed back in train mode
    assert cb.step_s == [2.0, 4.0, 6.0] and cb.eval_s == 5.0
    assert cb.curve == [
        {"version": 0, "seconds": 0.0, "accuracy": 0.25},
        {"version": 2, "seconds": 4.0, "accuracy": 0.5},
        {"version": 3, "seconds": 6.0, "accuracy": 0.75},
    ]


# ---- peak memory ------------------------------------------------------------------------------


def test_vmhwm_is_read_from_proc_status():
    text = "Name:\tpython\nVmPeak:\t  300 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 100 kB\n"
    assert parse_hwm_kb(text) == 12345
    assert parse_hwm_kb("Name:\tkthreadd\nState:\tS\n") is None


def test_this_process_has_a_peak_and_may_reset_it():
    assert peak_rss_mb(os.getpid()) > 10
    assert isinstance(reset_peak(os.getpid()), bool)
    assert peak_rss_mb(2**22 + 7) is None  # no such pid
    usage = own_usage()
    assert usage["cpu_s"] > 0 and usage["peak_rss_mb"] > 10


def test_descendants_are_the_whole_tree():
    table = {1: Proc("init", 0, 0), 10: Proc("svc", 1, 0), 11: Proc("pool", 10, 0), 12: Proc("w", 11, 0)}
    table[20] = Proc("other", 1, 0)
    assert sorted(descendants(table, 10)) == [10, 11, 12]
    assert descendants(table, 99) == []


# ---- the jetrl arm's figures ------------------------------------------------------------------


def test_wall_time_splits_into_waiting_and_training():
    versions = [
        VersionTimes(0, 100.0, 0),
        VersionTimes(1, 103.0, 128, sealed=102.0),  # waited 2 s for the batch, 1 s to train
        VersionTimes(2, 104.5, 128, sealed=101.0),  # sealed early (η > 0): all 1.5 s are training
        VersionTimes(3, 108.0, 128, sealed=None),  # no batch row: counted as training
    ]
    split = time_split(versions)
    assert split["waiting_s"] == pytest.approx(2.0) and split["training_s"] == pytest.approx(6.0)
    assert split["waiting_s"] + split["training_s"] == pytest.approx(8.0)
    assert split["training_p50_ms"] == pytest.approx(1500.0)


def test_a_batch_path_is_timed_hop_by_hop_from_the_version_that_admitted_it():
    versions = [
        VersionTimes(0, 100.0, 0),
        # admitted 10 ms after version 0, generated 90 ms later, scored +50, sealed +50
        VersionTimes(
            1, 103.0, 128, last_sample=100.1, sealed=100.2, admitted=100.01, admitted_version=0, scored=100.15
        ),
        # η = 1: admitted at version 0 too, 30 ms after it; then 170, 100, 30
        VersionTimes(
            2, 104.0, 128, last_sample=100.2, sealed=100.33, admitted=100.03, admitted_version=0, scored=100.3
        ),
        # no rewards recorded (a run without them): the two hops that need them are left out
        VersionTimes(3, 105.0, 128, last_sample=103.5, sealed=103.6, admitted=103.1, admitted_version=1),
    ]
    path = batch_path(versions)
    assert path["admission_p50_ms"] == pytest.approx(30.0)  # 10, 30, 100
    assert path["generation_p50_ms"] == pytest.approx(170.0)  # 90, 170, 400
    assert path["reward_p50_ms"] == pytest.approx(75.0)  # 50, 100
    assert path["sealing_p50_ms"] == pytest.approx(40.0)  # 50, 30
    assert batch_path([VersionTimes(0, 1.0, 0)]) == dict.fromkeys(path)  # nothing to time


def test_a_jetrl_row():
    versions = [
        VersionTimes(0, 10.0, 0),
        VersionTimes(1, 12.0, 128, sealed=11.0),
        VersionTimes(2, 15.0, 128, sealed=14.0),
    ]
    curve = [(0, 0.0, 0.4), (2, 5.0, 0.7)]
    cpu = {"svc_trainer": 3.0, "nats-server": 0.5, POSTGRES: 1.5}
    row = jetrl_row(1, 2, RunRecord("r1", "COMPLETED"), versions, curve, cpu, {"svc_trainer": 500.0}, True, 0.65)
    assert row["arm"] == "jetrl η=2" and row["seed"] == 1 and row["max_staleness"] == 2
    assert row["wall_s"] == 5.0 and row["time_to_target_s"] == 5.0 and row["version_at_target"] == 2
    assert row["final_accuracy"] == 0.7 and row["cpu_s"] == 5.0 and row["cpu_without_postgres_s"] == 3.5
    assert row["peak_rss_mb"] == 500.0 and row["waiting_s"] + row["training_s"] == pytest.approx(5.0)
    assert row["first_step_s"] == 2.0 and row["later_steps_s"] == 3.0


def test_an_arm_that_never_reaches_the_target():
    row = arm_row(TRL, 0, None, "COMPLETED", 6.0, [(0, 0.0, 0.4), (10, 1.0, 0.6)], 0.65)
    assert row["time_to_target_s"] is None and row["version_at_target"] is None and row["final_version"] == 10


# ---- the report -------------------------------------------------------------------------------


def _rows():
    curve = [(0, 0.0, 0.4), (10, 10.0, 0.7)]
    return [
        arm_row("jetrl η=0", 0, 0, "COMPLETED", 12.0, curve, 0.65) | {"cpu_s": 30.0, "peak_rss_mb": 1200.0},
        arm_row("jetrl η=2", 0, 2, "COMPLETED", 8.0, [(0, 0.0, 0.4), (11, 4.0, 0.7)], 0.65),
        arm_row(TRL, 0, None, "COMPLETED", 6.0, [(0, 0.0, 0.4), (10, 5.0, 0.66)], 0.65),
    ]


def test_curves_mark_an_evaluation_of_another_version():
    curve = [{"version": 0, "accuracy": 0.4}, {"version": 11, "accuracy": 0.715}]
    assert curve_text(curve, [0, 10]) == "40.0 71.5@11"
    assert curve_text(curve[:1], [0, 10]) == "40.0"


def test_ratios_and_criteria():
    rows = _rows()
    add_ratios(rows, [0, 10])
    assert rows[0]["wall_vs_trl"] == 2.0 and rows[1]["wall_vs_trl"] == pytest.approx(8 / 6)
    assert rows[2]["wall_vs_trl"] is None and rows[1]["curve_text"] == "40.0 70.0@11"
    checks = criteria(rows, [0, 2])
    wall = [c for c in checks if "1.5 ×" in c["criterion"]]
    assert len(wall) == 1 and wall[0]["met"] is False and wall[0]["measured"] == "2.00 ×"
    sooner = [c for c in checks if "before TRL" in c["criterion"]]
    assert len(sooner) == 1 and sooner[0]["met"] is True  # 4 s vs 5 s
    finals = [c for c in checks if "final held-out" in c["criterion"]]
    assert len(finals) == 3 and all(c["met"] is None for c in finals)


def test_ratios_without_the_first_step():
    rows = [
        arm_row("jetrl η=0", 1, 0, "COMPLETED", 12.0, [], 0.65, first_step_s=2.0),
        arm_row(TRL, 1, None, "COMPLETED", 6.0, [], 0.65, first_step_s=4.0),
    ]
    add_ratios(rows, [0])
    assert rows[0]["wall_vs_trl"] == 2.0 and rows[0]["later_steps_vs_trl"] == 5.0
    later = [c for c in criteria(rows, [0]) if "without the first step" in c["criterion"]]
    assert len(later) == 1 and later[0]["measured"] == "5.00 ×" and later[0]["met"] is None


def test_the_markdown_holds_tables_criteria_and_every_difference():
    rows = _rows()
    add_ratios(rows, [0, 10])
    text = report_text(rows, 10, 0.65, criteria(rows, [0, 2]))
    assert "| arm | seed | 10-step wall s |" in text and "waiting for a batch s" in text
    assert "(NOT met)" in text and "(met)" in text
    assert all(d in text for d in DIFFERENCES) and len(DIFFERENCES) >= 10
