"""Output of `jetrl bench control-plane`: four tables (runs, CPU per process, raw JetStream, the
issue's targets as measured) on the console, JSON, optionally markdown.

The targets are the ones the control plane is meant to reach; each row says whether this run's
figure meets it, computed from the figure, never written in.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

from jetrl.bench.control_plane_procs import POSTGRES
from jetrl.bench.control_plane_raw import RawRates
from jetrl.bench.control_plane_rows import STACK
from jetrl.bench.report import markdown_table, out_dir, rich_table, show, write_json
from jetrl.bench.stack import console

__all__ = ["RUN_COLUMNS", "cpu_rows", "cpu_columns", "targets", "report"]

MIN_RATE = 2000.0  # samples/s
MIN_SHARE = 0.10  # of the raw JetStream publish rate
MAX_OVERHEAD_MS = 50.0  # median per-version overhead

RUN_COLUMNS = [
    ("workers", "rollout workers", "{}"),
    ("state", "state", "{}"),
    ("samples_trained", "samples", "{:,}"),
    ("samples_per_s", "samples/s", "{:,.0f}"),
    ("overhead_p50_ms", "overhead p50 ms", "{:,.0f}"),
    ("overhead_p90_ms", "overhead p90 ms", "{:,.0f}"),
    ("to_seal_p50_ms", "to sealed p50 ms", "{:,.0f}"),
    ("to_announce_p50_ms", "sealed to announced p50 ms", "{:,.0f}"),
    ("of_raw_publish", "of raw publish", "{:.1%}"),
    ("of_raw_consume", "of raw consume", "{:.1%}"),
    ("stack_cpu_s_per_1k", "stack CPU s / 1k samples", "{:.2f}"),
    ("wall_s", "wall s", "{:,.0f}"),
]
# the label column of the tables below is keyed "config": the one rich_table left-justifies
RAW_COLUMNS = [
    ("config", "", "{}"),
    ("sample_bytes", "Sample bytes", "{:,}"),
    ("messages", "messages", "{:,}"),
    ("publish_rate", "publish msgs/s (acked)", "{:,.0f}"),
    ("consume_rate", "pull-consume msgs/s (acked)", "{:,.0f}"),
]
TARGET_COLUMNS = [("config", "target", "{}"), ("workers", "workers", "{}"), ("measured", "measured", "{}")]
TARGET_COLUMNS += [("met", "met", "{}")]

NOTE = (
    "samples/s: samples trained into versions after the warm-up, over the seconds from the warm-up version's "
    "announcement to the last one's. Overhead per version: its announcement minus the newest recorded sample "
    "it trained on (lineage timestamps: recorded, not generated), split at its batch's sealing. "
    "of raw: samples/s over the raw JetStream rates measured on the same nats-server after the runs."
)
CPU_NOTE = (
    "CPU seconds (utime + stime, descendants included) per process during each run, and per 1,000 trained "
    f"samples. {STACK}: every process the bench started. {POSTGRES}: every postgres process on the machine."
)


TAIL = ("nats-server", STACK, POSTGRES)  # after the services, in this order


def _process_order(name: str) -> tuple[int, str]:
    return (TAIL.index(name) + 1 if name in TAIL else 0, name)


def cpu_columns(rows: list[dict]) -> list[tuple[str, str, str]]:
    columns = [("config", "process", "{}")]
    for r in rows:
        w = r["workers"]
        columns += [(f"w{w}_cpu_s", f"{w} worker(s): CPU s", "{:,.1f}"), (f"w{w}_per_1k", "s / 1k samples", "{:.2f}")]
    return columns


def cpu_rows(rows: list[dict]) -> list[dict]:
    """One row per process, its CPU seconds and seconds per 1,000 samples under each worker count."""
    names = sorted({name for r in rows for name in r["cpu_s"]}, key=_process_order)
    return [
        {"config": name}
        | {f"w{r['workers']}_cpu_s": r["cpu_s"].get(name) for r in rows}
        | {f"w{r['workers']}_per_1k": r["cpu_s_per_1k"].get(name) for r in rows}
        for name in names
    ]


def _target(name: str, workers: object, value: float | None, fmt: str, ok: Callable[[float], bool]) -> dict:
    return {
        "target": name,
        "workers": workers,
        "measured": None if value is None else fmt.format(value),
        "met": None if value is None else ok(value),
    }


def targets(rows: list[dict]) -> list[dict]:
    """The issue's targets against each worker count's figures; throughput growth across counts."""
    out = []
    for r in rows:
        w = r["workers"]
        out.append(_target(f"samples/s >= {MIN_RATE:,.0f}", w, r.get("samples_per_s"), "{:,.0f}", MIN_RATE.__le__))
        out.append(
            _target(f">= {MIN_SHARE:.0%} of raw publish", w, r.get("of_raw_publish"), "{:.1%}", MIN_SHARE.__le__)
        )
        out.append(
            _target(
                f"overhead p50 < {MAX_OVERHEAD_MS:.0f} ms",
                w,
                r.get("overhead_p50_ms"),
                "{:.0f} ms",
                MAX_OVERHEAD_MS.__gt__,
            )
        )
    rates = [r.get("samples_per_s") for r in rows]
    known = [rate for rate in rates if rate is not None]
    if len(rows) > 1:
        out.append(
            {
                "target": "samples/s grows with workers",
                "workers": " -> ".join(str(r["workers"]) for r in rows),
                "measured": " -> ".join("-" if rate is None else f"{rate:,.0f}" for rate in rates),
                "met": all(b > a for a, b in zip(known, known[1:])) if len(known) == len(rates) else None,
            }
        )
    return out


def report(args: argparse.Namespace, rows: list[dict], raw: RawRates) -> None:
    raw_d = {
        "sample_bytes": raw.sample_bytes,
        "messages": raw.messages,
        "window": args.raw_window,
        "publish_s": raw.publish_s,
        "consume_s": raw.consume_s,
        "publish_rate": raw.publish_rate,
        "consume_rate": raw.consume_rate,
    }
    goals = targets(rows)
    goal_rows = [
        {**g, "config": g["target"], "met": {True: "met", False: "not met", None: None}[g["met"]]} for g in goals
    ]
    tables = [
        ("jetrl bench control-plane: the real services, engines that cost nothing", rows, RUN_COLUMNS, NOTE),
        ("CPU per process", cpu_rows(rows), cpu_columns(rows), CPU_NOTE),
        ("raw JetStream, same nats-server", [{"config": "raw", **raw_d}], RAW_COLUMNS, "a real Sample, no headers"),
        ("targets", goal_rows, TARGET_COLUMNS, "measured in this run"),
    ]
    for title, table_rows, columns, note in tables:
        show(rich_table(title, table_rows, columns, note))
    for r in rows:
        if r["state"] != "COMPLETED":
            console.print(f"[red]{r['workers']} worker(s): {r['state']}[/red] {r['message']}")
    payload = {
        "benchmark": "control-plane",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "parameters": {
            k: getattr(args, k)
            for k in ("steps", "warmup", "batch_groups", "group_size", "length", "max_staleness", "rollout_concurrency")
        },
        "raw": raw_d,
        "results": rows,
        "targets": goals,
    }
    json_path = args.json or out_dir(args) / "control_plane.json"
    write_json(json_path, payload)
    written = [str(json_path)]
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(f"### {t}\n\n" + markdown_table(r, c, n) for t, r, c, n in tables))
        written.append(str(args.markdown))
    console.print("wrote " + ", ".join(written))
