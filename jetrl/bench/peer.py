"""`jetrl bench peer`: the demo's RL phase on jetrl (the real services, the torch engines) side by
side with TRL's `GRPOTrainer`, matched setting by setting, from the same version 0, in one invocation.

Per seed: one jetrl run per η in --etas on a private stack (peer_jetrl.py; the demo's spec with
that seed and max_staleness; a short unmeasured run warms the stack up first), then the TRL arm
in a process of its own (`python -m jetrl.bench.peer_trl`, so its CPU and memory are its own) on
the same spec, after the stack is down. Version 0 is `jetrl bootstrap`'s checkpoint, the demo's
(cached in the user's JETRL_DATA_DIR; --model another directory): both arms load that very
directory. Both take the same torch intra-op threads: the stack's setting (JETRL_TORCH_THREADS,
or --torch-threads), torch's default when 0.

Per arm: wall time of the steps, time and version where held-out accuracy first reaches
--target, the held-out curve (greedy, 200 problems, every eval_every versions), final accuracy,
CPU seconds and peak RSS, and jetrl's wall time over TRL's for the same seed; the issue's
criteria as measured, and every difference between the arms that could not be removed
(peer_report.DIFFERENCES). JSON under --out (peer_bench.json), --markdown for the docs;
--logs keeps the services' logs.

TRL is not a dependency of jetrl: pip install -e '.[peer]' (trl, accelerate, datasets).

    jetrl bench peer [--seeds 0 1 2] [--etas 0 2] [--target 0.65] [--steps 50] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jetrl.bench.options import add_output

__all__ = ["add_arguments", "run", "trl_arm"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="run seeds, one jetrl run per η and one TRL run each"
    )
    p.add_argument("--etas", type=int, nargs="+", default=[0, 2], help="jetrl's staleness bounds (default 0 2)")
    p.add_argument("--target", type=float, default=0.65, help="held-out accuracy target (default 0.65, as bench async)")
    p.add_argument("--steps", type=int, help="versions per run (default the demo spec's: 50)")
    p.add_argument("--torch-threads", type=int, default=0, help="torch threads of both arms (default 0: the stack's)")
    p.add_argument("--model", type=Path, help="version 0 (default: the demo's bootstrap checkpoint, made if missing)")
    add_output(p, "results JSON (default DIR/peer_bench.json)", 1800.0)


def trl_arm(spec_path: Path, out: Path, seed: int, threads: int, timeout: float, target: float) -> dict[str, Any]:
    """Run the TRL arm of the spec at `spec_path` as a subprocess; its row (its log beside `out`)."""
    from jetrl.bench.peer_jetrl import arm_row
    from jetrl.bench.peer_report import TRL
    from jetrl.bench.stack import console

    log = out.with_suffix(".log")
    command = [sys.executable, "-m", "jetrl.bench.peer_trl", "--spec", str(spec_path), "--out", str(out)]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    console.print(f"  TRL arm, seed {seed}: {' '.join(command[1:])}")
    out.unlink(missing_ok=True)
    with open(log, "wb") as sink:
        try:
            code = subprocess.run(
                [*command, "--threads", str(threads)], stdout=sink, stderr=subprocess.STDOUT, env=env, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
    if not out.exists():
        state = "TIMEOUT" if code is None else f"FAILED (exit {code})"
        console.print(f"  [red]TRL arm, seed {seed}: {state}[/red], see {log}")
        return arm_row(TRL, seed, None, state, None, [], target) | {"log": str(log)}
    result = json.loads(out.read_text())
    curve = [(p["version"], p["seconds"], p["accuracy"]) for p in result["curve"]]
    steps = result["version_seconds"]
    row = arm_row(TRL, seed, None, result["state"], result["wall_s"], curve, target, steps[0] if steps else None)
    row.update({k: v for k, v in result.items() if k not in row and k != "config"})
    row.update(cpu_s=result["cpu_train_s"], log=str(log), trl_config=result["config"])
    return row


def run(args: argparse.Namespace) -> int:
    """Every arm of every seed; 0 when all of them completed."""
    from jetrl.bench.peer_jetrl import peer_spec, run_jetrl_arm, warm_up
    from jetrl.bench.peer_report import TRL, add_ratios, criteria, report_text, show_report
    from jetrl.bench.peer_trl import PEER_EXTRA, check_matchable, eval_versions
    from jetrl.bench.report import out_dir, write_json
    from jetrl.bench.stack import bench_database_url, console, private_stack
    from jetrl.cli.runs import bootstrap
    from jetrl.config import Settings, dump_spec, load_spec
    from jetrl.examples import DEMO_SPEC

    if importlib.util.find_spec("trl") is None:
        raise SystemExit(f"jetrl bench peer: {PEER_EXTRA}")
    load_before = os.getloadavg()
    user = Settings()
    base = load_spec(DEMO_SPEC)
    check_matchable(base)
    model_dir = bootstrap(user, args.model, force=False, task=base.task)
    database_url = bench_database_url(args, user)
    out = out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    overrides = {"torch_threads": args.torch_threads} if args.torch_threads else {}
    rows: list[dict[str, Any]] = []
    with private_stack(database_url, args.logs, **overrides) as settings:
        threads, concurrency = settings.torch_threads, settings.rollout_concurrency
        warm_up(settings, peer_spec(base, model_dir, args.seeds[0], 0, args.steps), args.timeout)
        for seed in args.seeds:
            for eta in args.etas:
                spec = peer_spec(base, model_dir, seed, eta, args.steps)
                rows.append(run_jetrl_arm(settings, database_url, spec, eta, args.timeout, args.target))
    for seed in args.seeds:
        spec = peer_spec(base, model_dir, seed, 0, args.steps)
        spec_path = out / f"peer-trl-s{seed}.yaml"
        spec_path.write_text(dump_spec(spec))
        rows.append(trl_arm(spec_path, out / f"peer-trl-s{seed}.json", seed, threads, args.timeout, args.target))
    rows.sort(key=lambda r: (r["seed"], r["arm"] == TRL, r["max_staleness"] or 0))
    steps = args.steps or base.train.steps
    add_ratios(rows, eval_versions(steps, base.schedule.eval_every))
    checks = criteria(rows, args.etas)
    show_report(rows, steps, args.target, checks)
    json_path = args.json or out / "peer_bench.json"
    payload = _payload(args, rows, checks, model_dir, steps, threads, concurrency)
    write_json(json_path, payload | {"load_average": {"before": load_before, "after": os.getloadavg()}})
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report_text(rows, steps, args.target, checks))
    console.print(f"wrote {json_path}" + (f", {args.markdown}" if args.markdown else ""))
    return 0 if all(r["state"] == "COMPLETED" for r in rows) else 1


def _payload(args, rows, checks, model_dir: Path, steps: int, threads: int, concurrency: int) -> dict[str, Any]:
    from jetrl.bench.peer_report import DIFFERENCES
    from jetrl.examples import DEMO_SPEC

    bootstrap_json = model_dir / "bootstrap.json"
    return {
        "benchmark": "peer",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["jetrl", *sys.argv[1:]]) if sys.argv else "",
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "spec": str(DEMO_SPEC),
        "steps": steps,
        "target": args.target,
        "model_dir": str(model_dir),
        "bootstrap": json.loads(bootstrap_json.read_text()) if bootstrap_json.exists() else None,
        "source": _source(),
        "torch_threads": threads,
        "rollout_concurrency": concurrency,
        "criteria": checks,
        "differences": DIFFERENCES,
        "results": rows,
    }


def _source() -> dict[str, Any] | None:
    """The checkout the services ran from: its commit and the files changed or added since (None
    outside a git checkout); jetrl's figures are those of that code."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode:
        return None
    return {"commit": head.stdout.strip(), "changed": [line[3:] for line in status.stdout.splitlines()]}
