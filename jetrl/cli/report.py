"""`jetrl report RUN [--out FILE]`: one static HTML page with a run's curves and its spec.

The page is self-contained (inline SVG charts from jetrl/cli/svg_chart.py, inline CSS, no script,
nothing fetched): it can be mailed, archived next to a checkpoint, or opened years later.

It reads lineage (JETRL_DATABASE_URL) directly rather than asking the scheduler: the curves are
the run's history, every version's trainer metrics and every evaluation, which lineage keeps and
no RPC serves, and a report is most wanted after a run, when the stack may well be down. What
it shows of a live run is lineage as of the moment it was made (the page says when).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from jetrl.cli.svg_chart import Series, line_chart
from jetrl.config import Settings
from jetrl.lineage.reports import RunStats, VersionPoint

__all__ = ["RunSummary", "ReportData", "load", "throughput", "build_html", "main"]

BLUE, ORANGE, GREEN, RED, PURPLE = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"
STATE_COLORS = {"COMPLETED": GREEN, "RUNNING": BLUE, "STOPPED": ORANGE, "FAILED": RED}
CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.charts svg { border: 1px solid #ddd; background: #fff; font-family: system-ui, sans-serif; }
table { border-collapse: collapse; margin: 8px 0; } td, th { border: 1px solid #ddd; padding: 2px 8px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 12px; overflow-x: auto; }
.state { font-weight: bold; }
"""


@dataclass(frozen=True)
class RunSummary:
    """The run's lineage row, as the page shows it."""

    run_id: str
    name: str
    state: str
    message: str
    spec_yaml: str
    created_at: datetime
    updated_at: datetime
    policy_version: int
    total_steps: int


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows; `as_of` is when it was read from lineage."""

    run: RunSummary
    evaluations: list[tuple[int, int, int, float]]  # (version, correct, total, accuracy)
    versions: list[VersionPoint]
    stats: RunStats
    as_of: datetime


async def load(settings: Settings, run_id: str) -> ReportData:
    """The run's report data from lineage; LookupError when lineage has no such run."""
    from jetrl.lineage.store import open_store

    async with open_store(settings.database_url) as store:
        row = await store.runs.get_run(run_id)
        if row is None:
            raise LookupError(f"no run {run_id!r} in lineage; `jetrl runs` lists them")
        fields = {f: getattr(row, f) for f in RunSummary.__dataclass_fields__}
        return ReportData(
            RunSummary(**fields),
            await store.reports.evaluations(run_id),
            await store.reports.version_points(run_id),
            await store.reports.run_stats(run_id),
            datetime.now(UTC),
        )


def throughput(started: datetime, versions: list[VersionPoint]) -> list[tuple[int, float]]:
    """(version, trained samples per second) over the time since the previous version (the first:
    since the run was created)."""
    out = []
    before, trained = started, 0
    for v in versions:
        seconds = (v.created_at - before).total_seconds()
        if seconds > 0:
            out.append((v.version, (v.samples_trained_total - trained) / seconds))
        before, trained = v.created_at, v.samples_trained_total
    return out


def _num(value: float | int | None, fmt: str = ".4g") -> str:
    return "–" if value is None else format(value, fmt)


def _charts(data: ReportData) -> list[str]:
    """One chart per curve, every one over the policy versions."""
    vs = data.versions

    def chart(title: str, *series: Series) -> str:
        return line_chart(title, "version", series, integer_x=True)

    def per_version(label: str, field: str, color: str) -> Series:
        return Series(label, [(v.version, getattr(v, field)) for v in vs if getattr(v, field) is not None], color)

    charts = [
        chart("held-out accuracy", Series("accuracy", [(v, a) for v, _, _, a in data.evaluations], BLUE)),
        chart("mean reward", per_version("reward", "mean_reward", ORANGE)),
        chart(
            "staleness (versions)",
            per_version("mean", "mean_staleness", GREEN),
            per_version("max", "max_staleness", RED),
        ),
        chart("throughput (trained samples/s)", Series("samples/s", throughput(data.run.created_at, vs), PURPLE)),
        # collapse in sight: one answer for every question shows as a share near 1
        chart("top answer's share of the trained samples", per_version("top answer", "top_answer_share", RED)),
    ]
    for key in _metric_keys(vs):
        charts.append(
            chart(f"trainer: {key}", Series(key, [(v.version, v.metrics[key]) for v in vs if key in v.metrics], BLUE))
        )
    return charts


def _metric_keys(versions: list[VersionPoint]) -> list[str]:
    return sorted({k for v in versions for k in v.metrics})


def _version_table(data: ReportData) -> str:
    keys = _metric_keys(data.versions)
    accuracy = {v: a for v, _, _, a in data.evaluations}
    rates = dict(throughput(data.run.created_at, data.versions))
    head = ["version", "at (s)", "trained", "reward", "staleness", "max stale", "samples/s", "held-out", "top answer"]
    head += keys
    rows = []
    for v in data.versions:
        cells = [
            str(v.version),
            _num((v.created_at - data.run.created_at).total_seconds(), ".1f"),
            str(v.samples_trained_total),
            _num(v.mean_reward),
            _num(v.mean_staleness),
            _num(v.max_staleness),
            _num(rates.get(v.version)),
            _num(accuracy.get(v.version), ".1%"),
            _num(v.top_answer_share, ".0%"),
            *(_num(v.metrics.get(k)) for k in keys),
        ]
        rows.append("<tr>" + "".join(f'<td class="num">{escape(c)}</td>' for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"
    return f'<table class="versions">{header}{"".join(rows)}</table>'


def _summary(data: ReportData) -> str:
    run, stats = data.run, data.stats
    last = data.evaluations[-1] if data.evaluations else None
    facts = [
        ("run", run.run_id),
        ("name", run.name),
        ("state", run.state),
        ("message", run.message or "–"),
        ("version", f"{run.policy_version}/{run.total_steps}"),
        ("held-out accuracy", f"{last[3]:.1%} (v{last[0]}, {last[1]}/{last[2]})" if last else "not measured"),
        ("samples", f"{stats.samples_trained} trained / {stats.samples_generated} generated"),
        ("dead letters", str(stats.dead_letters)),
        ("reward failures", str(stats.reward_failures)),
        ("created", run.created_at.isoformat(timespec="seconds")),
        ("last change", run.updated_at.isoformat(timespec="seconds")),
    ]
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts)
    return f'<table class="summary">{rows}</table>'


def build_html(data: ReportData) -> str:
    """The whole page."""
    run = data.run
    color = STATE_COLORS.get(run.state, "#222")
    title = f"jetrl run {run.run_id}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head><body>"
        f'<h1>{escape(title)} <span class="state" style="color:{color}">{escape(run.state)}</span></h1>'
        f"<p>{escape(run.message)}</p>"
        f"{_summary(data)}"
        f'<h2>Curves</h2><div class="charts">{"".join(_charts(data))}</div>'
        f"<h2>Per version</h2>{_version_table(data)}"
        f'<h2>Run spec</h2><pre class="spec">{escape(run.spec_yaml)}</pre>'
        f"<footer>read from lineage at {escape(data.as_of.isoformat(timespec='seconds'))}</footer>"
        "</body></html>"
    )


async def main(settings: Settings, run_id: str, out: Path | None) -> int:
    """Write the page (default ./<run>.html) and print where it is."""
    from jetrl.lineage.db import DatabaseUnreachable

    try:
        data = await load(settings, run_id)
    except (LookupError, DatabaseUnreachable) as exc:
        print(f"jetrl report: {exc.args[0]}", file=sys.stderr)
        return 1
    path = out or Path(f"{run_id}.html")
    path.write_text(build_html(data), encoding="utf-8")
    print(f"report of {run_id} ({data.run.state}) written to {path}")
    return 0
