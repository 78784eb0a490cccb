"""`jetrl explain SAMPLE_ID`: one sample's whole story, from lineage.

Its run and group, prompt and text; which versions generated which of its tokens, and each
attempt's segment (worker, token range, versions, how it ended: APRIL may have cut it and another
worker resumed it); how each reward server scored it; the batch and version that trained it; and
the link to its trace in Jaeger (`jaeger_url`, JETRL_JAEGER_URL).

Lineage (JETRL_DATABASE_URL) is read directly: it is the only place all of this is kept together,
and a sample is worth explaining long after its stack is gone.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from jetrl.config import Settings

__all__ = ["Story", "load", "version_runs", "trace_link", "render", "main"]

out = Console()


@dataclass(frozen=True)
class Story:
    """Lineage rows of one sample (jetrl/lineage/reports.py: sample_story, segments, sample_rewards)."""

    sample: Any
    segments: Sequence[Any]
    rewards: Sequence[Any]


async def load(settings: Settings, sample_id: str) -> Story | None:
    from jetrl.lineage.store import open_store

    async with open_store(settings.database_url) as store:
        sample = await store.reports.sample_story(sample_id)
        if sample is None:
            return None
        return Story(sample, await store.reports.segments(sample_id), await store.reports.sample_rewards(sample_id))


def version_runs(token_versions: Sequence[int]) -> list[tuple[int, int, int]]:
    """(start, end, version): the stretches of completion tokens one policy version generated."""
    runs: list[tuple[int, int, int]] = []
    for i, version in enumerate(token_versions):
        if runs and runs[-1][2] == version:
            runs[-1] = (runs[-1][0], i + 1, version)
        else:
            runs.append((i, i + 1, version))
    return runs


def trace_link(jaeger_url: str, trace_id: str) -> str:
    return f"{jaeger_url.rstrip('/')}/trace/{trace_id}" if trace_id else "no trace recorded for this sample"


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*("–" if v is None else str(v) for v in row))
    return table


def _training(s: Any) -> str:
    if s.trained_version is None:
        return f"not trained (its group is {s.group_state})"
    return (
        f"trained in batch {s.batch_id} (step {s.batch_step}) into version {s.trained_version}: "
        f"advantage {s.advantage:+.4f}, staleness {s.staleness}, {s.trained_tokens} tokens trained, "
        f"{s.stale_masked_tokens} masked as too stale, {s.offpolicy_tokens} off-policy"
    )


def render(story: Story, jaeger_url: str) -> list[RenderableType]:
    """What `jetrl explain` prints, in order."""
    s = story.sample
    reward = "none yet" if s.reward is None else f"{s.reward:g}"
    tokens = version_runs(s.token_versions)
    return [
        Text.from_markup(f"[bold]sample {s.sample_id}[/bold]  (index {s.index}, view {s.view})"),
        f"run {s.run_id}, group {s.group_id} ({s.group_state})",
        f"prompt {s.prompt!r}, reference {s.reference!r}",
        f"text {s.text!r}: {len(s.completion_token_ids)} completion tokens after {len(s.prompt_token_ids)} "
        f"prompt tokens, finished by {s.finish_reason} on {s.worker_id}, "
        f"{s.attempts} attempt(s), {s.prefix_len} tokens recycled, {s.regenerated} regenerated",
        _table(
            "which versions generated which tokens",
            ("tokens", "version"),
            [(f"[{a}, {b})", f"v{v}") for a, b, v in tokens],
        ),
        _table(
            "segments (one per attempt)",
            ("attempt", "worker", "tokens", "versions", "finish"),
            [
                (
                    g.attempt,
                    g.worker_id,
                    f"[{g.start}, {g.end})",
                    _versions(g.min_version, g.max_version),
                    g.finish_reason,
                )
                for g in story.segments
            ],
        ),
        _table(
            f"rewards (combined {reward}, scored by {s.reward_server or '–'})",
            ("server", "endpoint", "reward", "extracted answer", "detail"),
            [(r.server, r.endpoint, f"{r.reward:g}", repr(r.extracted_answer), r.detail) for r in story.rewards],
        ),
        _training(s),
        f"trace: {trace_link(jaeger_url, s.trace_id)}",
    ]


def _versions(low: int | None, high: int | None) -> str:
    if low is None:
        return "no tokens"
    return f"v{low}" if low == high else f"v{low}–v{high}"


async def main(settings: Settings, sample_id: str) -> int:
    from jetrl.lineage.db import DatabaseUnreachable

    try:
        story = await load(settings, sample_id)
    except DatabaseUnreachable as exc:
        print(f"jetrl explain: {exc}", file=sys.stderr)
        return 1
    if story is None:
        print(
            f"jetrl explain: no sample {sample_id!r} in lineage; a sample id is RUN.gNNNNNN.INDEX "
            "(group NNNNNN of RUN), and lineage lists a run's: SELECT sample_id FROM samples WHERE run_id = 'RUN'",
            file=sys.stderr,
        )
        return 1
    for part in render(story, settings.jaeger_url):
        out.print(part)
    return 0
