"""The simulated-hardware suite of `jetrl bench async`: every configuration on one private stack.

Each configuration is one run of the same spec (same seed, model, task, B, G and simulated
hardware) that differs only in `schedule.max_staleness` (η) and `schedule.over_provision` (ρ).
Its figures come from lineage (trained tokens per version, staleness, aborts) and from the
rollout worker's status (generated tokens, decoding time); see jetrl/bench/metrics.py.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from jetrl.bench.configs import CONFIGS, TRAIN_S_PER_TOKEN, BenchConfig
from jetrl.bench.metrics import Ideal, ideal_bound, read_run_metrics
from jetrl.bench.report import (
    SIM_COLUMNS,
    caption,
    markdown_table,
    out_dir,
    plot,
    require_plotting,
    rich_table,
    show,
    write_json,
)
from jetrl.bench.stack import RunRecord, bench_database_url, console, follow_all, private_stack
from jetrl.config import RunSpec, Settings
from jetrl.spec_sections import SimulationSpec

__all__ = ["run_simulated", "simulation_from", "sim_spec"]

HELDOUT = 8  # the end-of-run evaluation: a simulated engine scores nothing, keep it trivial
DEFAULT_STEPS = 16


def simulation_from(args: argparse.Namespace) -> SimulationSpec:
    """The simulated hardware from its options: each field from the option of the same name
    (--train-s-per-token, when not given, from --scenario)."""
    fields = {field: getattr(args, field) for field in SimulationSpec.model_fields}
    if fields["train_s_per_token"] is None:
        fields["train_s_per_token"] = TRAIN_S_PER_TOKEN[args.scenario]
    return SimulationSpec(**fields)


def sim_spec(cfg: BenchConfig, args: argparse.Namespace, model_dir: Path, sim: SimulationSpec) -> RunSpec:
    """The run spec of one configuration; everything but η and ρ is the same for all."""
    return RunSpec.model_validate(
        {
            "name": f"bench-{cfg.name}",
            "seed": args.seed,
            "model": {"path": str(model_dir)},
            "task": {"name": "arithmetic", "heldout_size": HELDOUT},
            # the cap of the whole completion is the simulated cap, so lengths are never cut below it
            "rollout": {"group_size": args.group_size, "max_new_tokens": sim.max_length},
            "train": {"steps": args.steps or DEFAULT_STEPS, "batch_groups": args.batch_groups},
            "schedule": {
                "max_staleness": cfg.max_staleness,
                "over_provision": cfg.over_provision,
                "recycled_staleness": cfg.recycled_staleness,
                "max_concurrent": args.max_concurrent,
                "eval_every": 0,
            },
            "simulation": sim.model_dump(),
        }
    )


def make_model_dir(path: Path, max_length: int) -> Path:
    """A fresh, untrained tiny policy: the services load its tokenizer (and the trainer its
    weights, to publish them); nothing runs it, but its positions cover a whole completion."""
    from jetrl.policy import make_char_tokenizer, make_tiny_model, save_policy

    tokenizer = make_char_tokenizer()
    return save_policy(make_tiny_model(tokenizer, max_positions=max_length + 64), tokenizer, path)


def result_row(cfg: BenchConfig, record: RunRecord, ideal: Ideal, database_url: str, warmup: int) -> dict:
    """One configuration's figures (None where not measurable); JSON row and table row alike."""
    row = {
        "config": cfg.name,
        "max_staleness": cfg.max_staleness,
        "over_provision": cfg.over_provision,
        "run_id": record.run_id,
        "state": record.state,
        "message": record.message,
        "wall_s": record.wall_s,
        "utilisation": record.busy_s / record.wall_s if record.wall_s > 0 else None,
        "rollout_tps": record.rollout_tps(warmup),
    }
    if record.state != "COMPLETED":
        return row
    m = read_run_metrics(database_url, record.run_id, warmup)
    row.update(
        window_s=m.window.seconds,
        window_versions=[m.window.first_version, m.window.last_version],
        trained_tokens=m.window.tokens,
        train_tps=m.window.throughput,
        ideal_ratio=m.window.throughput / ideal.bound,
        mean_staleness=m.mean_staleness,
        max_staleness_seen=m.max_staleness,
        stale_masked_tokens=m.stale_masked_tokens,
        offpolicy_tokens=m.offpolicy_tokens,
        recycled=m.recycled,
        groups_recycled=m.groups_recycled,
        aborted_tokens=m.aborted_tokens,
        aborted_trained_share=m.aborted_trained_share,
    )
    return row


def run_simulated(args: argparse.Namespace) -> int:
    if (args.steps or DEFAULT_STEPS) <= args.warmup:
        raise SystemExit(f"--steps ({args.steps}) must exceed --warmup ({args.warmup}): the window would be empty")
    require_plotting()  # before the runs, not after them
    configs = [CONFIGS[name] for name in args.configs]
    sim = simulation_from(args)
    ideal = ideal_bound(sim, args.batch_groups, args.group_size)
    database_url = bench_database_url(args, Settings())
    with private_stack(
        database_url, args.logs, rollout_concurrency=args.rollout_concurrency, torch_threads=1
    ) as settings:
        model_dir = make_model_dir(settings.data_dir / "models" / "bench-tiny", sim.max_length)
        runs = [(cfg.name, sim_spec(cfg, args, model_dir, sim)) for cfg in configs]  # all validated up front
        records = follow_all(settings, "jetrl bench async (simulated hardware)", runs, args.timeout)
    rows = [result_row(cfg, record, ideal, database_url, args.warmup) for cfg, record in zip(configs, records)]
    sync = next((r.get("train_tps") for r in rows if r["config"] == "sync"), None)
    for row in rows:
        row["speedup"] = row["train_tps"] / sync if sync and row.get("train_tps") else None
    report(args, rows, ideal, sim)
    return 0 if all(r["state"] == "COMPLETED" for r in rows) else 1


def report(args: argparse.Namespace, rows: list[dict], ideal: Ideal, sim: SimulationSpec) -> None:
    ideal_d = {
        "bound": ideal.bound,
        "generator_tps": ideal.generator_tps,
        "trainer_tps": ideal.trainer_tps,
        "tokens_per_batch": ideal.tokens_per_batch,
        "limited_by": ideal.limited_by,
    }
    note = caption(args.warmup, ideal_d)
    show(rich_table("jetrl bench async: simulated hardware, real services", rows, SIM_COLUMNS, note))
    for r in rows:
        if r["state"] != "COMPLETED":
            console.print(f"[red]{r['config']}: {r['state']}[/red] {r['message']}")
    payload = {
        "benchmark": "async",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": platform.platform(),
        "steps": args.steps or DEFAULT_STEPS,
        "warmup": args.warmup,
        "batch_groups": args.batch_groups,
        "group_size": args.group_size,
        "seed": args.seed,
        "simulation": sim.model_dump(),
        "ideal": ideal_d,
        "results": rows,
    }
    json_path = args.json or out_dir(args) / "async_bench.json"
    plot_path = args.plot or out_dir(args) / "img" / "async_bench.png"
    write_json(json_path, payload)
    plot(
        plot_path,
        [r for r in rows if r.get("train_tps")],
        ideal.bound,
        f"B={args.batch_groups}, G={args.group_size}, {args.steps or DEFAULT_STEPS} steps, simulated hardware",
    )
    written = [str(json_path), str(plot_path)]
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown_table(rows, SIM_COLUMNS, note))
        written.append(str(args.markdown))
    console.print("wrote " + ", ".join(written))
