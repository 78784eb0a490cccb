"""`jetrl bench rewards`: rewards with and without labels, and grpo vs mc_grpo at G = 2, on a
harder arithmetic variant where version 0 is weak (docs/rewards.md).

Each arm trains the same starting checkpoint through the real services on a private stack (as
`jetrl bench async --real`: own nats-server, free ports, database `jetrl_bench`), with the
label-free reward servers started beside it, each run alone on a free port and ended by pid:

    verify       labels     built-in verifier, grpo, G = 8
    majority     no labels  agreement with the group's own majority (TTRL), G = 8
    co_reward    no labels  agreement with the analogous view's majority (Co-rewarding-I), G = 8 per view
    teacher      no labels  agreement with the EMA teacher's majority of G~ = 8 samples (Co-rewarding-II)
    grpo-g2      labels     verify, grpo, G = 2
    mc_grpo-g2   labels     verify, mc_grpo, G + 1 = 3 samples (median baseline, the pivot not trained)

    jetrl bench rewards [--arms verify co_reward ...] [--seeds 0 1 2] [--steps 50] [--batch-groups 16]
    jetrl bench rewards --from-json docs/rewards.json   # measure those runs again from lineage; runs nothing

It writes under --out DIR (default $JETRL_DATA_DIR/bench): rewards.json and the plot
img/rewards.png. `--out docs` in a checkout rewrites the results docs/rewards.md shows.

Version 0 is the tiny policy warmed up on correct answers (teacher_error 0) for only a few
hundred steps on 4-term chains of 1-digit operands (`7-2+5+3=`), cached under the user's
JETRL_DATA_DIR keyed by its settings. Before any run the bench measures in process what version 0
gives each reward to work with (greedy, single-sample and majority-of-8 accuracy, the accuracy of
each rule's pseudo-labels); after each run, what the run actually trained on (its pseudo-labels
against the references, from lineage). Held-out accuracy (greedy, 200 problems never trained on)
is always measured against the references.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

from jetrl.bench.rewards_arms import ARMS, Arm, add_arguments, arm_spec, starting_checkpoint, task_spec
from jetrl.bench.rewards_metrics import label_stats, read_dynamics, read_groups, summarize
from jetrl.bench.rewards_report import (
    LABEL_COLUMNS,
    RUN_COLUMNS,
    SUMMARY_COLUMNS,
    V0_COLUMNS,
    criterion,
    flat_run_rows,
    plot_curves,
    plot_dynamics,
    summary_rows,
    v0_rows,
)
from jetrl.bench.rewards_v0 import v0_diagnostics
from jetrl.config import RunSpec, Settings, load_spec, parse_spec
from jetrl.examples import DEMO_SPEC

__all__ = ["main", "run", "run_row", "recorded_spec"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="rewards_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(p)
    return run(p.parse_args(argv))


def run_row(
    arm: Arm,
    seed: int,
    spec: RunSpec,
    record,
    curve: list[tuple[int, float, float]],
    labels: dict | None,
    dynamics: list[dict],
) -> dict:
    """One run's figures: its held-out curve, version 0 and final accuracy, what it trained on,
    entropy, KL and top-answer share per version and the first version its progress warned of collapse."""
    v0 = next((a for v, _, a in curve if v == 0), None)
    final = curve[-1] if curve and curve[-1][0] > 0 else None
    return {
        "arm": arm.name,
        "reward": arm.reward,
        "labels_used": arm.labels,
        "advantage": arm.advantage,
        "group_size": spec.rollout.group_size,
        "analogous_view": spec.rollout.analogous_view,
        "teacher_samples": spec.teacher.samples if spec.teacher else 0,
        "seed": seed,
        "run_id": record.run_id,
        "state": record.state,
        "message": record.message,
        "wall_s": record.wall_s,
        "v0_accuracy": v0,
        "final_version": final[0] if final else None,
        "final_accuracy": final[2] if final else None,
        "gain": final[2] - v0 if final and v0 is not None else None,
        "curve": [{"version": v, "seconds": t, "accuracy": a} for v, t, a in curve],
        "labels": labels,
        "dynamics": dynamics,
        "warned_at": next((d["version"] for d in dynamics if d["warning"]), None),
    }


# ---- the bench -------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from jetrl.bench.metrics import read_accuracy_curve
    from jetrl.bench.report import markdown_table, out_dir, require_plotting, rich_table, show, write_json
    from jetrl.bench.stack import RunRecord, bench_database_url, console, follow_all, private_stack
    from jetrl.cli.stack import start_reward_servers

    if args.kl_coef is not None and args.recipe != "papers":
        raise SystemExit("jetrl bench rewards: --kl-coef sets the KL anchor of --recipe papers; add --recipe papers")
    require_plotting()  # before the runs, not after them
    started = time.monotonic()
    json_path = args.json or out_dir(args) / "rewards.json"
    plot_path = args.plot or out_dir(args) / "img" / "rewards.png"
    dynamics_path = plot_path.with_name(f"{plot_path.stem}-dynamics{plot_path.suffix}")
    user = Settings()
    previous = json.loads(args.from_json.read_text()) if args.from_json else None
    if previous:  # the settings the runs were made with, not this command line's
        v0 = previous["version0"]
        made_with = {
            **previous["settings"],
            "bootstrap_steps": v0["bootstrap_steps"],
            "diag_samples": v0["samples"],
            "diag_prompts": v0["train_prompts"],
            "digits": previous["task"]["digits"],
            "terms": previous["task"]["terms"],
        }
        for key, value in made_with.items():
            setattr(args, key, value)
    task = task_spec(args)
    model_dir = starting_checkpoint(user, task, args.bootstrap_steps)
    console.print(f"version 0 diagnostics ({args.diag_samples} samples per prompt)…")
    base = load_spec(DEMO_SPEC)
    diag = v0_diagnostics(
        model_dir,
        task,
        samples=args.diag_samples,
        temperature=base.rollout.temperature,
        max_new_tokens=base.rollout.max_new_tokens,
        train_prompts=args.diag_prompts,
    )
    sets, rules = v0_rows(diag)
    show(rich_table("version 0", sets, V0_COLUMNS, ""))
    show(rich_table("version 0: the pseudo-labels each rule would give", rules, LABEL_COLUMNS, ""))

    arms = [ARMS[name] for name in args.arms]
    pairs = [(seed, arm) for seed in args.seeds for arm in arms]  # seed-major: every arm's first seed first
    database_url = bench_database_url(args, user)
    if previous:
        pairs = [(r["seed"], ARMS[r["arm"]]) for r in previous["results"]]
        records = [RunRecord(r["run_id"], r["state"], r["message"], r["wall_s"]) for r in previous["results"]]
        specs = [recorded_spec(database_url, r.run_id) for r in records]
    else:
        with private_stack(database_url, args.logs) as settings:
            servers = start_reward_servers(settings, sorted({a.server for a in arms if a.server}))
            for module, addr in servers.items():
                console.print(f"  started {module} at {addr}")
            specs = [arm_spec(base, model_dir, arm, seed, args, servers) for seed, arm in pairs]
            records = follow_all(
                settings,
                "jetrl bench rewards",
                [(f"{arm.name}, seed {seed}", spec) for (seed, arm), spec in zip(pairs, specs)],
                args.timeout,
            )
    rows = []
    for (seed, arm), spec, record in zip(pairs, specs, records):
        curve = read_accuracy_curve(database_url, record.run_id)
        labels = label_stats(read_groups(database_url, record.run_id), arm.reward, split_version=args.steps // 2)
        dynamics = read_dynamics(database_url, record.run_id, spec.metrics)
        rows.append(run_row(arm, seed, spec, record, curve, labels, dynamics))
    order = [a.name for a in arms]
    rows.sort(key=lambda r: (order.index(r["arm"]), r["seed"]))
    summary = summarize(rows, order)
    verdict = criterion(summary)
    note = (
        "Held-out accuracy: greedy, 200 problems never trained on, final = the last version. "
        "Gain in points over version 0; gain / verify's = mean gain over verify's mean gain. "
        "Pseudo-label right: share of trained (group, view)s whose label equals the reference."
    )
    show(rich_table("jetrl bench rewards: held-out accuracy per arm", summary_rows(summary), SUMMARY_COLUMNS, note))
    show(
        rich_table(
            f"per run (labels from lineage; early = groups admitted before version {args.steps // 2})",
            flat_run_rows(rows),
            RUN_COLUMNS,
            "",
        )
    )
    console.print(verdict)
    wall = time.monotonic() - started
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    made = {"date": now, "argv": sys.argv, "wall_s": wall}
    if previous:  # when and how the runs were made; this command only measured them again
        made = {**{k: previous[k] for k in made}, "measured_again": {"date": now, "argv": sys.argv}}
    write_json(
        json_path,
        {
            "benchmark": "rewards",
            **made,
            "machine": platform.platform(),
            "task": task.model_dump(mode="json"),
            "version0": {
                "model_dir": str(model_dir),
                "bootstrap_steps": args.bootstrap_steps,
                "teacher_error": 0.0,
                **diag,
            },
            "settings": {
                k: getattr(args, k)
                for k in (
                    "arms",
                    "recipe",
                    "kl_coef",
                    "seeds",
                    "steps",
                    "batch_groups",
                    "group_size",
                    "teacher_samples",
                    "eval_every",
                    "lr",
                )
            },
            "base_spec": str(DEMO_SPEC.relative_to(DEMO_SPEC.parents[1])),
            "criterion": verdict,
            "summary": summary,
            "results": rows,
        },
    )
    plot_curves(
        plot_path,
        rows,
        order,
        diag["heldout"]["greedy"],
        f"{args.terms}-term chains of {args.digits}-digit operands; {len(args.seeds)} seeds, B = {args.batch_groups}",
    )
    plot_dynamics(dynamics_path, rows, order, f"{args.recipe} recipe; means over {len(args.seeds)} seeds")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(
            "\n".join(
                [
                    markdown_table(sets, V0_COLUMNS, ""),
                    markdown_table(rules, LABEL_COLUMNS, ""),
                    markdown_table(summary_rows(summary), SUMMARY_COLUMNS, note),
                    markdown_table(flat_run_rows(rows), RUN_COLUMNS, ""),
                    verdict,
                    "",
                ]
            )
        )
    console.print(
        f"wrote {json_path}, {plot_path}, {dynamics_path}"
        + (f", {args.markdown}" if args.markdown else "")
        + f" in {wall / 60:.1f} min"
    )
    return 0 if all(r["state"] == "COMPLETED" for r in rows) else 1


def recorded_spec(database_url: str, run_id: str) -> RunSpec:
    """The spec a run was created with, from lineage."""
    from sqlalchemy import create_engine, select

    from jetrl.lineage.models import Run

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return parse_spec(conn.execute(select(Run.spec_yaml).where(Run.run_id == run_id)).scalar_one())
    finally:
        engine.dispose()
