"""Line charts as inline SVG for `jetrl report`'s page.

Drawn here rather than with a plotting library so that the page is one self-contained file that
any browser shows without a network, and so that `jetrl report` needs nothing the services do not
(matplotlib is only the `bench` extra). Each point carries a <title>: a browser shows its exact
value on hover.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Series", "line_chart", "nice_ticks"]

WIDTH, HEIGHT = 520, 240
LEFT, RIGHT, TOP, BOTTOM = 60, 16, 30, 38  # margins: tick labels left and below, title and legend on top


@dataclass(frozen=True)
class Series:
    """One line: its name in the legend, its (x, y) points, its colour (any CSS colour)."""

    label: str
    points: Sequence[tuple[float, float]]
    color: str


def nice_ticks(lo: float, hi: float, count: int = 5, min_step: float = 0.0) -> list[float]:
    """About `count` round tick values (steps of 1, 2, 2.5 or 5 times a power of ten, and at least
    `min_step`) covering [lo, hi]."""
    if hi <= lo:  # one value: a range around it (10% of it, or 1 around 0), so the line sits mid-chart
        pad = abs(lo) * 0.1 or 0.5
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = max(next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw), min_step)
    ticks = [math.floor(lo / step) * step]
    while ticks[-1] < hi - step * 1e-9:  # the tolerance: 0.1 * 3 is a hair under 0.3
        ticks.append(ticks[0] + len(ticks) * step)
    return [round(t, 12) for t in ticks]  # keep 0.30000000000000004 out of the labels


def _label(value: float) -> str:
    return f"{value:.4g}"


def line_chart(title: str, x_label: str, series: Sequence[Series], integer_x: bool = False) -> str:
    """An <svg> element: the series as lines with a dot per point, axes with round ticks, a legend.
    Non-finite values are left out; with no point at all the chart says so. `integer_x`: x counts
    something (versions), so its ticks are whole numbers."""
    clean = [
        Series(s.label, [(x, y) for x, y in s.points if math.isfinite(x) and math.isfinite(y)], s.color) for s in series
    ]
    points = [p for s in clean for p in s.points]
    head = (
        f'<svg class="chart" data-title="{escape(title)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
        f'<text x="{LEFT}" y="18" font-weight="bold">{escape(title)}</text>'
    )
    if not points:
        return head + f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" fill="#888">no data</text></svg>'
    xs = nice_ticks(min(x for x, _ in points), max(x for x, _ in points), min_step=1.0 if integer_x else 0.0)
    ys = nice_ticks(min(y for _, y in points), max(y for _, y in points))
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - xs[0]) / (xs[-1] - xs[0]) * inner_w

    def py(y: float) -> float:
        return TOP + inner_h - (y - ys[0]) / (ys[-1] - ys[0]) * inner_h

    parts = [head]
    for y in ys:
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#e4e4e4"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end" font-size="11">{_label(y)}</text>')
    for x in xs:
        parts.append(
            f'<text x="{px(x):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" font-size="11">{_label(x)}</text>'
        )
    parts.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{inner_w}" height="{inner_h}" fill="none" stroke="#999"/>'
        f'<text x="{LEFT + inner_w / 2}" y="{HEIGHT - 6}" text-anchor="middle" font-size="12">{escape(x_label)}</text>'
    )
    legend_x = WIDTH - RIGHT
    for s in reversed(clean):  # right-aligned legend, written from the right edge leftwards
        parts.append(
            f'<text x="{legend_x}" y="18" text-anchor="end" font-size="12" fill="{s.color}">● {escape(s.label)}</text>'
        )
        legend_x -= 24 + 8 * len(s.label)  # about a glyph's width per character, and the dot
    for s in clean:
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s.points)
        parts.append(
            f'<polyline class="series" data-label="{escape(s.label)}" points="{coords}" '
            f'fill="none" stroke="{s.color}" stroke-width="2"/>'
        )
        parts.extend(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{s.color}">'
            f"<title>{escape(s.label)}: {_label(y)} at {escape(x_label)} {_label(x)}</title></circle>"
            for x, y in s.points
        )
    return "".join(parts) + "</svg>"
