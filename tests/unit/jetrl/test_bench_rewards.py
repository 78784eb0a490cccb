"""`jetrl bench rewards` without services: the spec of each arm, pseudo-label figures, the
summary over seeds, sampling, outputs."""

import pytest

from jetrl.bench.report import markdown_table
from jetrl.bench.rewards import run as bench_run
from jetrl.bench.rewards_arms import ARMS, arm_spec, task_spec
from jetrl.bench.rewards_metrics import label_of, label_stats, mean_curve, mean_series, summarize
from jetrl.bench.rewards_report import (
    SUMMARY_COLUMNS,
    criterion,
    flat_run_rows,
    plot_curves,
    plot_dynamics,
    summary_rows,
)
from jetrl.bench.rewards_v0 import sample_texts
from jetrl.cli.main import _parser
from jetrl.config import load_spec
from jetrl.examples import DEMO_SPEC

SERVERS = {
    "svc_reward.majority": "127.0.0.1:6001",
    "svc_reward.co_reward": "127.0.0.1:6002",
    "svc_reward.teacher": "127.0.0.1:6003",
}


def bench_args(*argv: str):
    return _parser().parse_args(["bench", "rewards", *argv])


def test_arguments_and_arms():
    args = bench_args()
    assert args.arms == list(ARMS) == ["verify", "majority", "co_reward", "teacher", "grpo-g2", "mc_grpo-g2"]
    assert (args.seeds, args.steps, args.batch_groups, args.group_size, args.eval_every) == ([0, 1, 2], 50, 16, 8, 5)
    assert (args.digits, args.terms, args.bootstrap_steps, args.teacher_samples) == (1, 4, 300, 8)
    assert bench_args("--arms", "verify", "co_reward", "--seeds", "4").arms == ["verify", "co_reward"]
    assert (
        args.from_json is None and str(bench_args("--from-json", "docs/rewards.json").from_json) == "docs/rewards.json"
    )
    with pytest.raises(SystemExit):
        bench_args("--arms", "rloo")
    assert [a.server for a in ARMS.values()] == [
        None,
        "svc_reward.majority",
        "svc_reward.co_reward",
        "svc_reward.teacher",
        None,
        None,
    ]


def test_arm_specs_differ_only_in_reward_estimator_and_views(tmp_path):
    base = load_spec(DEMO_SPEC)
    args = bench_args("--steps", "7", "--batch-groups", "3")
    specs = {name: arm_spec(base, tmp_path, arm, 2, args, SERVERS) for name, arm in ARMS.items()}
    for spec in specs.values():
        assert spec.seed == 2 and spec.model.path == str(tmp_path) and len(spec.name) <= 64
        assert (spec.task.digits, spec.task.terms, spec.task.rephrase) == (1, 4, "order")
        assert (spec.train.steps, spec.train.batch_groups, spec.train.lr) == (7, 3, base.train.lr)
        assert spec.schedule.eval_every == 5 and spec.rollout.temperature == base.rollout.temperature
    v, m, c, t, g2, mc = specs.values()
    assert v.reward.endpoints == () and v.rollout.group_size == 8 and not v.rollout.analogous_view and v.teacher is None
    assert [e.address for e in m.reward.endpoints] == ["127.0.0.1:6001"] and not m.rollout.analogous_view
    assert [e.address for e in c.reward.endpoints] == ["127.0.0.1:6002"] and c.rollout.analogous_view
    assert [e.address for e in t.reward.endpoints] == ["127.0.0.1:6003"] and t.teacher.samples == 8
    assert (t.teacher.ema_start, t.teacher.ema_end) == (0.99, 0.99999) and not t.rollout.analogous_view
    assert (g2.rollout.group_size, g2.train.advantage, g2.reward.endpoints) == (2, "grpo", ())
    assert (mc.rollout.group_size, mc.train.advantage, mc.reward.endpoints) == (3, "mc_grpo", ())
    same = {"name", "reward", "rollout", "teacher", "train"}
    assert all(s.model_dump(exclude=same) == v.model_dump(exclude=same) for s in specs.values())
    assert task_spec(bench_args("--digits", "2", "--terms", "3")).model_dump(include={"digits", "terms"}) == {
        "digits": 2,
        "terms": 3,
    }


def test_the_papers_recipe_adds_their_kl_anchor_schedule_and_slow_teacher_and_nothing_else(tmp_path):
    base = load_spec(DEMO_SPEC)
    demo, papers = bench_args(), bench_args("--recipe", "papers")
    assert demo.recipe == "demo"
    for name, arm in ARMS.items():
        before, after = (
            arm_spec(base, tmp_path, arm, 0, demo, SERVERS),
            arm_spec(base, tmp_path, arm, 0, papers, SERVERS),
        )
        assert before.train.kl_coef == 0.0 and before.train.lr_schedule == "constant"
        train = after.train
        assert (train.kl_estimator, train.lr_schedule, train.lr_warmup_ratio, train.lr) == (
            "k3",
            "cosine",
            0.1,
            base.train.lr,
        )
        # Co-rewarding-II: the teacher is the reference, at its β; the others anchor to version 0 at Co-rewarding-I's
        expected = (0.001, "teacher") if name == "teacher" else (0.005, "initial")
        assert (train.kl_coef, train.kl_reference) == expected, name
        if after.teacher is not None:
            assert (after.teacher.ema_start, after.teacher.ema_end, after.teacher.update_every) == (0.99, 0.99999, 1)
        changed = {
            "train": {"kl_coef", "kl_estimator", "kl_reference", "lr_schedule", "lr_warmup_ratio"},
            "teacher": True,
        }
        assert after.model_dump(exclude=changed) == before.model_dump(exclude=changed)
    stronger = arm_spec(
        base, tmp_path, ARMS["teacher"], 0, bench_args("--recipe", "papers", "--kl-coef", "0.5"), SERVERS
    )
    assert (stronger.train.kl_coef, stronger.train.kl_reference) == (0.5, "teacher")
    with pytest.raises(SystemExit, match="add --recipe papers"):
        bench_run(bench_args("--kl-coef", "0.5"))


def group(admitted, reference, **views):
    """(admitted version, reference, view -> [(text, reward)]); rewards 1 where the text ends in '*'."""
    return (
        admitted,
        reference,
        {v: [(t.rstrip("*"), 1.0 if t.endswith("*") else 0.0) for t in texts] for v, texts in views.items()},
    )


def test_labels_of_each_rule():
    views = group(0, "5", main=["5", "4", "4"], analogous=["5", "5", "3"], teacher=["6", "6", "5"])[2]
    assert label_of("verify", "main", views, "5") == "5"
    assert label_of("majority", "main", views, "5") == "4"
    assert label_of("co_reward", "main", views, "5") == "5" and label_of("co_reward", "analogous", views, "5") == "4"
    assert label_of("teacher", "main", views, "5") == "6"
    assert label_of("co_reward", "main", {"main": [("1", 0.0)]}, "1") is None  # no other view: no label
    with pytest.raises(ValueError):
        label_of("rloo", "main", views, "5")


def test_label_stats_hand_worked():
    # co_reward: group 1 (early): main is labelled by the analogous majority (5, right), the
    # analogous view by main's (4, wrong); group 2 (late): main labelled 9 (wrong), analogous has
    # no number in main, so no label.
    groups = [
        group(0, "5", main=["5*", "4", "4"], analogous=["5*", "5*", "3"]),
        group(3, "2", main=["x", "y", "x"], analogous=["9", "2", "9"]),
    ]
    stats = label_stats(groups, "co_reward", split_version=2)
    every = stats["all"]
    assert (every["groups"], every["samples"]) == (2, 12)
    assert every["sample_accuracy"] == pytest.approx(4 / 12)  # 5, 5, 5, 2
    assert every["label_accuracy"] == pytest.approx(1 / 4) and every["no_label"] == pytest.approx(1 / 4)
    assert every["own_majority_accuracy"] == pytest.approx(1 / 4)  # only group 1's analogous majority (5)
    # rewards as recorded: three right samples rewarded, none wrong; "2" of group 2 right but unrewarded
    assert every["reward_precision"] == 1.0 and every["reward_recall"] == pytest.approx(3 / 4)
    assert every["reward_agreement"] == pytest.approx(11 / 12)
    assert (every["top_answer"], every["top_answer_share"]) == ("5", pytest.approx(3 / 12))  # not None (3 too)
    assert stats["early"]["groups"] == 1 and stats["early"]["label_accuracy"] == pytest.approx(1 / 2)
    assert stats["late"]["label_accuracy"] == 0.0
    # teacher samples are context only: never counted as trained samples
    teacher = label_stats([group(0, "5", main=["5*", "5*"], teacher=["5", "6", "5"])], "teacher", 1)["all"]
    assert (teacher["samples"], teacher["label_accuracy"], teacher["reward_agreement"]) == (2, 1.0, 1.0)
    empty = label_stats([], "verify", 1)["all"]
    assert empty["samples"] == 0 and empty["sample_accuracy"] is None


def run(arm, seed, v0, final, label=None, wall=10.0):
    labels = {"all": {"label_accuracy": label}} if label is not None else None
    return {
        "arm": arm,
        "seed": seed,
        "v0_accuracy": v0,
        "final_accuracy": final,
        "wall_s": wall,
        "labels": labels,
        "group_size": 8,
        "advantage": "grpo",
        "labels_used": arm == "verify",
        "curve": [
            {"version": 0, "accuracy": v0},
            {"version": 5, "accuracy": (v0 + final) / 2},
            {"version": 10, "accuracy": final},
        ],
    }


def test_summary_gain_as_share_of_verify():
    rows = [
        run("verify", 0, 0.2, 0.5, 1.0),
        run("verify", 1, 0.2, 0.4, 1.0),  # gains 0.3, 0.2: mean 0.25
        run("co_reward", 0, 0.2, 0.45, 0.6),
        run("co_reward", 1, 0.2, 0.37, 0.4),  # 0.25, 0.17: 0.21
        run("majority", 0, 0.2, 0.1, 0.2),
        {**run("teacher", 0, 0.2, 0.3), "final_accuracy": None},
    ]
    summary = summarize(rows, ["verify", "majority", "co_reward", "teacher"])
    assert [s["arm"] for s in summary] == ["verify", "majority", "co_reward"]  # teacher: no completed run
    verify, majority, co = summary
    assert verify["gain"]["mean"] == pytest.approx(0.25) and verify["gain_vs_reference"] == pytest.approx(1.0)
    assert verify["gain"]["std"] == pytest.approx(0.0707, abs=1e-4)
    assert co["gain_vs_reference"] == pytest.approx(0.84) and co["label_accuracy"] == pytest.approx(0.5)
    assert (co["final"]["min"], co["final"]["max"]) == (0.37, 0.45)
    assert majority["gain_vs_reference"] == pytest.approx(-0.4) and majority["gain"]["std"] == 0.0
    assert criterion(summary).startswith("criterion met: co_reward reaches 84%")
    assert criterion(summary[:2]).startswith("criterion: not measured")
    assert criterion([verify, {**co, "gain_vs_reference": 0.79}]).startswith("criterion not met")
    md = markdown_table(summary_rows(summary), SUMMARY_COLUMNS, "")
    assert "| verify | yes | G = 8, grpo |" in md
    assert (
        "| co_reward | no | G = 8, grpo | 2 | 20.0 | 41.0 ± 5.7 | 37.0–45.0 | +21.0 ± 5.7 | 84% | 50.0% | 0 of 2 |"
        in md
    )
    assert flat_run_rows([run("verify", 0, 0.2, 0.5)])[0]["label_accuracy"] is None
    late = {"label_accuracy": 0.1, "top_answer": "2", "top_answer_share": 0.934}
    flat = flat_run_rows([{**run("majority", 0, 0.2, 0.1), "labels": {"all": {}, "early": {}, "late": late}}])[0]
    assert (flat["label_late"], flat["top_late"]) == (0.1, "2 (93%)")


def test_mean_curve_over_the_versions_every_run_has():
    a = {"curve": [{"version": 0, "accuracy": 0.2}, {"version": 5, "accuracy": 0.4}, {"version": 7, "accuracy": 0.5}]}
    b = {"curve": [{"version": 0, "accuracy": 0.2}, {"version": 5, "accuracy": 0.2}]}
    assert mean_curve([a, b]) == [(0, pytest.approx(0.2), 0.2, 0.2), (5, pytest.approx(0.3), 0.2, 0.4)]
    assert mean_curve([]) == []


def test_sampling_at_temperature_zero_is_greedy():
    from jetrl.policy.generate import complete
    from jetrl.policy.load import encode_prompt
    from jetrl.policy.tiny import make_tiny_model
    from jetrl.policy.tokenizer import make_char_tokenizer

    tokenizer = make_char_tokenizer()
    model = make_tiny_model(tokenizer, seed=1).eval()
    prompts = ["1+2=", "7-2+5+3=", "9-9="]
    greedy = complete(
        model,
        [encode_prompt(tokenizer, p) for p in prompts],
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
        max_new_tokens=4,
    )
    texts = sample_texts(model, tokenizer, prompts, 2, temperature=0.0, max_new_tokens=4, seed=0)
    assert texts == [[t, t] for t in tokenizer.batch_decode(greedy, skip_special_tokens=True)]
    hot = sample_texts(model, tokenizer, prompts, 3, temperature=1.0, max_new_tokens=4, seed=5, batch_size=4)
    assert [len(g) for g in hot] == [3, 3, 3]
    assert hot == sample_texts(model, tokenizer, prompts, 3, temperature=1.0, max_new_tokens=4, seed=5, batch_size=4)


def test_plot(tmp_path):
    rows = [
        run("verify", 0, 0.2, 0.5),
        run("co_reward", 0, 0.2, 0.3),
        run("grpo-g2", 0, 0.2, 0.3),
        run("mc_grpo-g2", 0, 0.2, 0.4),
    ]
    out = tmp_path / "img" / "rewards.png"
    plot_curves(out, rows, ["verify", "co_reward", "grpo-g2", "mc_grpo-g2"], 0.2, "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_v0_diagnostics_shape(tmp_path):
    from jetrl.bench.rewards_report import v0_rows
    from jetrl.bench.rewards_v0 import v0_diagnostics
    from jetrl.policy.bootstrap import bootstrap
    from jetrl.spec_sections import TaskSpec

    spec = TaskSpec(digits=1, terms=4, heldout_size=6)
    bootstrap(tmp_path / "v0", spec, steps=2, batch_size=8, teacher_error=0.0)
    diag = v0_diagnostics(tmp_path / "v0", spec, samples=3, train_prompts=10)
    assert (diag["samples"], diag["train_prompts"], diag["heldout"]["prompts"], diag["main"]["prompts"]) == (
        3,
        10,
        6,
        10,
    )
    for name in ("heldout", "main", "analogous"):
        figures = diag[name]
        assert all(0.0 <= figures[k] <= 1.0 for k in ("greedy", "single", "majority", "pass"))
        assert figures["single"] <= figures["pass"]
    assert set(diag["labels"]) == {"majority", "co_reward", "teacher"}
    sets, rules = v0_rows(diag)
    assert len(sets) == 3 and [r["rule"].split(":")[0] for r in rules] == ["majority", "co_reward", "teacher"]


def dynamics(*points):
    return [{"version": v, "entropy": e, "kl": None, "top_answer_share": t, "warning": w} for v, e, t, w in points]


def test_dynamics_warned_runs_and_late_entropy():
    collapsing = {
        **run("co_reward", 0, 0.2, 0.05),
        "final_version": 4,
        "dynamics": dynamics((1, 1.5, 0.2, ""), (2, 1.0, 0.4, ""), (3, 0.4, 0.7, "collapse? ..."), (4, 0.2, 0.9, "x")),
        "warned_at": 3,
    }
    steady = {
        **run("co_reward", 1, 0.2, 0.3),
        "final_version": 4,
        "dynamics": dynamics((1, 1.5, 0.1, ""), (2, 1.3, 0.1, ""), (4, 1.1, 0.2, "")),
        "warned_at": None,
    }
    assert mean_series([collapsing, steady], "entropy") == [
        (1, 1.5),
        (2, pytest.approx(1.15)),
        (4, pytest.approx(0.65)),
    ]
    assert mean_series([collapsing, steady], "kl") == []  # no reference: no KL
    [summary] = summarize([collapsing, steady], ["co_reward"])
    assert summary["warned"] == 1 and summary_rows([summary])[0]["warned"] == "1 of 2"
    flat = flat_run_rows([collapsing, steady])
    assert [f["warned"] for f in flat] == ["from v3", "no"]
    assert flat[0]["entropy_late"] == pytest.approx(0.3) and flat[1]["entropy_late"] == pytest.approx(1.1)


def test_plot_dynamics(tmp_path):
    rows = [{**run("verify", 0, 0.2, 0.5), "dynamics": dynamics((1, 1.2, 0.1, ""), (2, 1.1, 0.2, ""))}]
    out = tmp_path / "img" / "rewards-dynamics.png"
    plot_dynamics(out, rows, ["verify", "co_reward"], "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
