"""Output of `jetrl chaos`: a line per trial as it ends, the table at the end (rich on the
terminal, markdown in --out) and the JSON of every trial with its plan, checks and notes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from jetrl.chaos.plan import ChaosConfig
from jetrl.chaos.trial import TrialResult

__all__ = ["console", "progress_line", "rows", "rich_table", "summary", "markdown", "write"]

console = Console(stderr=True, soft_wrap=True)  # a progress line stays one line in a log file
HEADERS = ("trial", "spec", "fault", "moment", "outcome", "invariants", "duration")
COLOURS = {"ok": "green", "missed": "yellow"}


def _spec(r: TrialResult) -> str:
    april = ", ρ=2" if r.plan.spec == "april" else ""
    return f"{r.plan.spec} (η={r.plan.max_staleness}{april})"


def _invariants(r: TrialResult) -> str:
    if not r.checks:
        return "not checked"
    failed = [c.name for c in r.checks if not c.ok]
    return f"{len(r.checks) - len(failed)}/{len(r.checks)}" + (f" (failed: {', '.join(failed)})" if failed else "")


def rows(results: list[TrialResult]) -> list[tuple[str, ...]]:
    return [
        (
            str(r.plan.index),
            _spec(r),
            r.plan.fault_label(),
            r.plan.moment(),
            r.outcome,
            _invariants(r),
            f"{r.duration_s:.0f} s",
        )
        for r in results
    ]


def progress_line(r: TrialResult, total: int, markup: bool = True) -> str:
    """The trial's line (with rich colour markup unless `markup` is False), and under it what
    went wrong: the fault as done, the last progress, the failed checks and the notes."""
    colour = COLOURS.get(r.outcome, "red")
    outcome = f"[{colour}]{r.outcome}[/{colour}]" if markup else r.outcome
    line = (
        f"trial {r.plan.index + 1}/{total}  {_spec(r)}  {r.plan.fault_label()} at {r.plan.moment()}: "
        f"{outcome}  invariants {_invariants(r)}  {r.duration_s:.0f} s  ({r.run_id})"
    )
    details = [f"{c.name}: {c.detail}" for c in r.checks if not c.ok] + r.notes
    if r.outcome != "ok":
        details = [r.fault, r.progress, *details]
    return line + "".join(f"\n    {d}" for d in details if d)


def summary(results: list[TrialResult]) -> str:
    counts = Counter(r.outcome for r in results)
    seconds = [r.duration_s for r in results]
    mean = sum(seconds) / len(seconds) if seconds else 0.0
    return (
        f"{len(results)} trial{'' if len(results) == 1 else 's'}: "
        + ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
        + f"; {mean:.0f} s per trial on average, {sum(seconds) / 60:.1f} min in all"
    )


def rich_table(results: list[TrialResult], config: ChaosConfig) -> Table:
    table = Table(title=f"jetrl chaos (seed {config.seed})", caption=summary(results), caption_justify="left")
    for header in HEADERS:
        table.add_column(header, justify="right" if header in ("trial", "duration") else "left")
    for r, row in zip(results, rows(results)):
        colour = COLOURS.get(r.outcome, "red")
        table.add_row(*row[:4], f"[{colour}]{row[4]}[/{colour}]", *row[5:])
    return table


def markdown(results: list[TrialResult], config: ChaosConfig) -> str:
    lines = [f"| {' | '.join(HEADERS)} |", f"|{'---|' * len(HEADERS)}"]
    lines += [f"| {' | '.join(row)} |" for row in rows(results)]
    return (
        f"`jetrl chaos` seed {config.seed}, {config.steps} versions per run, outage {config.outage_s:g} s, "
        f"restart delay up to {config.max_restart_delay_s:g} s\n\n" + "\n".join(lines) + f"\n\n{summary(results)}\n"
    )


def write(out: Path, results: list[TrialResult], config: ChaosConfig) -> None:
    """chaos.json (the config and every trial) and chaos.md (the table) under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "chaos.json").write_text(
        json.dumps(
            {
                "config": config.model_dump(mode="json"),
                "trials": [r.model_dump(mode="json") | {"passed": r.passed} for r in results],
            },
            indent=2,
        )
        + "\n"
    )
    (out / "chaos.md").write_text(markdown(results, config))
