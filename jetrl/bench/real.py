"""`jetrl bench async --real`: the demo itself, synchronous vs bounded staleness, on CPU.

The tiny built-in policy trains on the demo's spec (jetrl/examples/arithmetic.yaml) through the
real services with the real torch engines; only η changes between runs (default 0 and 2), seeds
are shared. The figure of merit is wall time from the run's creation to the first version whose
held-out accuracy reaches the target, evaluated every 5 versions so the crossing is seen. The
default target, 65%, is where the README's demo curve settles (68.0% at v30, 66.5% at v40, 71.5%
at v50): the final 71.5% is a single end point, 65% is first crossed around v30 and then held.

The starting checkpoint is `jetrl bootstrap`'s, cached under the user's JETRL_DATA_DIR (the one
the demo uses), so the warm-up runs once across benches and demos.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from jetrl.bench.metrics import read_accuracy_curve, time_to_target
from jetrl.bench.report import REAL_COLUMNS, markdown_table, out_dir, rich_table, show, write_json
from jetrl.bench.stack import RunRecord, bench_database_url, console, follow_all, private_stack
from jetrl.config import RunSpec, Settings, load_spec
from jetrl.examples import DEMO_SPEC

__all__ = ["run_real", "real_spec", "EVAL_EVERY"]

EVAL_EVERY = 5


def real_spec(base: RunSpec, model_dir: Path, seed: int, eta: int, steps: int | None) -> RunSpec:
    """The demo spec with this seed and staleness bound, evaluated every EVAL_EVERY versions."""
    raw = base.model_dump()
    raw["name"] = f"real-eta{eta}-s{seed}"
    raw["seed"] = seed
    raw["model"]["path"] = str(model_dir)
    raw["schedule"].update(max_staleness=eta, eval_every=EVAL_EVERY)
    if steps:
        raw["train"]["steps"] = steps
    return RunSpec.model_validate(raw)


def real_row(seed: int, eta: int, record: RunRecord, curve: list[tuple[int, float, float]], target: float) -> dict:
    """One run's figures: when it first reached the target, where it ended, its whole curve."""
    version_at, reached = time_to_target(curve, target) or (None, None)
    return {
        "seed": seed,
        "max_staleness": eta,
        "run_id": record.run_id,
        "state": record.state,
        "message": record.message,
        "wall_s": record.wall_s,
        "time_to_target_s": reached,
        "version_at_target": version_at,
        "final_version": curve[-1][0] if curve else None,
        "final_accuracy": curve[-1][2] if curve else None,
        "curve": [{"version": v, "seconds": t, "accuracy": a} for v, t, a in curve],
    }


def run_real(args: argparse.Namespace) -> int:
    from jetrl.cli.runs import bootstrap

    user = Settings()
    base = load_spec(DEMO_SPEC)
    model_dir = bootstrap(user, None, force=False, task=base.task)  # cached: built only the first time
    database_url = bench_database_url(args, user)
    pairs = [(seed, eta) for seed in args.seeds for eta in args.etas]
    runs = [(f"seed {seed}, η={eta}", real_spec(base, model_dir, seed, eta, args.steps)) for seed, eta in pairs]
    # the stack takes the rest of its settings (rollout concurrency, torch threads) from the environment
    with private_stack(database_url, args.logs) as settings:
        records = follow_all(settings, "jetrl bench async --real (tiny policy, CPU)", runs, args.timeout)
    rows = [
        real_row(seed, eta, record, read_accuracy_curve(database_url, record.run_id), args.target)
        for (seed, eta), record in zip(pairs, records)
    ]
    baseline = {r["seed"]: r["time_to_target_s"] for r in rows if r["max_staleness"] == min(args.etas)}
    for row in rows:
        before, now = baseline.get(row["seed"]), row["time_to_target_s"]
        row["speedup"] = before / now if before and now else None
    note = (
        f"Wall time from run creation to the first version with held-out accuracy >= {args.target:.0%} "
        f"(evaluated every {EVAL_EVERY} versions; '-' = not reached); × is against η={min(args.etas)} "
        "with the same seed."
    )
    show(rich_table("jetrl bench async --real: time to the demo's accuracy target", rows, REAL_COLUMNS, note))
    json_path = args.json or out_dir(args) / "async_bench_real.json"
    write_json(
        json_path,
        {
            "benchmark": "async-real",
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": platform.platform(),
            "target": args.target,
            "eval_every": EVAL_EVERY,
            "spec": str(DEMO_SPEC),
            "results": rows,
        },
    )
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown_table(rows, REAL_COLUMNS, note))
    console.print(f"wrote {json_path}" + (f", {args.markdown}" if args.markdown else ""))
    return 0 if all(r["state"] == "COMPLETED" for r in rows) else 1
