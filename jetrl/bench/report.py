"""Output of `jetrl bench async`: a rich table, JSON, a markdown table and a throughput plot; and
where every bench writes (`--out`) and how it plots (matplotlib, the `bench` extra).

A result is one flat dict per configuration (the JSON rows); the columns below say how each
key is shown. Missing figures (None) show as "-".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from jetrl.config import Settings

__all__ = [
    "SIM_COLUMNS",
    "REAL_COLUMNS",
    "OUT_HELP",
    "out_dir",
    "pyplot",
    "require_plotting",
    "caption",
    "rich_table",
    "show",
    "markdown_table",
    "write_json",
    "plot",
]

OUT_HELP = (
    "directory of the outputs (default $JETRL_DATA_DIR/bench: .jetrl/bench under the working "
    "directory unless JETRL_DATA_DIR is set; in a checkout, --out docs rewrites the committed results)"
)
BENCH_EXTRA = "plots need matplotlib, the `bench` extra of jetrl: pip install 'jetrl[bench]'"


def out_dir(args: argparse.Namespace) -> Path:
    """Where a bench writes: --out, else $JETRL_DATA_DIR/bench (OUT_HELP)."""
    return args.out if args.out is not None else Settings().data_dir / "bench"


def require_plotting() -> None:
    """Exit with a message naming the `bench` extra when matplotlib is missing: a bench that plots
    checks before it runs anything, not after the runs."""
    if importlib.util.find_spec("matplotlib") is None:
        raise SystemExit(f"jetrl bench: {BENCH_EXTRA}")


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only: no display on a server)."""
    require_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# (key, header, format) of the simulated-hardware suite, in display order
SIM_COLUMNS = [
    ("config", "config", "{}"),
    ("max_staleness", "η", "{}"),
    ("over_provision", "ρ", "{:g}"),
    ("train_tps", "trained tok/s", "{:,.0f}"),
    ("rollout_tps", "generated tok/s", "{:,.0f}"),
    ("utilisation", "rollout util.", "{:.0%}"),
    ("mean_staleness", "mean stale.", "{:.2f}"),
    ("max_staleness_seen", "max stale.", "{}"),
    ("stale_masked_tokens", "stale-masked tok", "{:,}"),
    ("recycled", "recycled (aborts)", "{:,}"),
    ("aborted_trained_share", "aborted work trained", "{:.0%}"),
    ("speedup", "× sync", "{:.2f}"),
    ("ideal_ratio", "of ideal", "{:.0%}"),
]

REAL_COLUMNS = [
    ("seed", "seed", "{}"),
    ("max_staleness", "η", "{}"),
    ("time_to_target_s", "s to target", "{:,.0f}"),
    ("version_at_target", "version at target", "{}"),
    ("final_accuracy", "final accuracy", "{:.1%}"),
    ("final_version", "final version", "{}"),
    ("wall_s", "wall s", "{:,.0f}"),
    ("speedup", "× η=0 (to target)", "{:.2f}"),
]


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def caption(warmup: int, ideal: dict | None) -> str:
    """What the throughput columns mean, for the table caption and the markdown."""
    text = (
        f"Throughput over the steady-state window: from the announcement of version {warmup} to the last "
        "version (trained = tokens in the loss; generated = new tokens from the rollout worker). "
        "Rollout utilisation = decoding wall time / run wall time."
    )
    if ideal:
        text += (
            f" Ideal bound {ideal['bound']:,.0f} tok/s = min(generator {ideal['generator_tps']:,.0f}, "
            f"trainer {ideal['trainer_tps']:,.0f}) at {ideal['tokens_per_batch']:,.0f} expected tokens per batch."
        )
    return text


def rich_table(title: str, rows: list[dict], columns, note: str) -> Table:
    table = Table(title=title, caption=note, caption_justify="left")
    for key, header, _ in columns:
        table.add_column(header, justify="left" if key == "config" else "right")
    for row in rows:
        table.add_row(*(_cell(row.get(key), fmt) for key, _, fmt in columns))
    return table


def show(table: Table) -> None:
    """Print a results table on stdout; into a file or pipe (no terminal width to fit) wide
    enough that no column is squeezed."""
    out = Console()
    (out if out.is_terminal else Console(width=200)).print(table)


def markdown_table(rows: list[dict], columns, note: str) -> str:
    """A GitHub markdown table with the caption below it (for docs/benchmarks.md)."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(k), f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join(lines) + f"\n\n{note}\n"


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def plot(path: Path, rows: list[dict], ideal: float | None, title: str) -> None:
    """Bars of trained and generated tokens/s per configuration; the ideal bound as a line."""
    plt = pyplot()
    names = [r["config"] for r in rows]
    trained = [r.get("train_tps") or 0.0 for r in rows]
    generated = [r.get("rollout_tps") or 0.0 for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.2))
    ax.bar([x - 0.2 for x in xs], trained, width=0.4, label="trained tokens/s")
    ax.bar([x + 0.2 for x in xs], generated, width=0.4, label="generated tokens/s", alpha=0.6)
    top = max([*trained, *generated, 1.0])
    if ideal is not None and math.isfinite(ideal):
        ax.axhline(ideal, color="black", linestyle="--", linewidth=1, label=f"ideal bound {ideal:,.0f}")
        top = max(top, ideal)
    ax.set_ylim(0, top * 1.15)  # room above the bound line for the legend
    ax.set_xticks(list(xs), names, rotation=20)
    ax.set_ylabel("tokens / s (steady state)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
