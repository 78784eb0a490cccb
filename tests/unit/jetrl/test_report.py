"""`jetrl report` (jetrl/cli/report.py, jetrl/cli/svg_chart.py): the page built from fixed lineage
data holds every curve, the numbers and the spec; headless Chromium renders the curves."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from jetrl.cli.report import ORANGE, PURPLE, ReportData, RunSummary, build_html, throughput
from jetrl.cli.svg_chart import Series, line_chart, nice_ticks
from jetrl.lineage.reports import RunStats, VersionPoint

T0 = datetime(2025, 1, 1, tzinfo=UTC)
SPEC = "name: arith\nmodel: {path: /m/tiny}\ntrain: {steps: 3, lr: 0.001}\n"


def data(state: str = "COMPLETED", message: str = "") -> ReportData:
    versions = [
        VersionPoint(v, T0 + timedelta(seconds=10 * v), 8 * v, {"loss": 0.5 / v, "kl": v / 100, "lr": 1e-3}, r, s, m, t)
        for v, r, s, m, t in [(1, 0.25, 0.0, 0, 0.5), (2, 0.5, 0.5, 1, None), (3, 0.875, 1.25, 2, 0.25)]
    ]
    stats = RunStats(24, 24, 0, 0.875, T0, T0, 0.58, 2, 0.1, 0, 1, "x: UNAVAILABLE", None, None, None)
    run = RunSummary("arith-1", "arith", state, message, SPEC, T0, T0 + timedelta(seconds=31), 3, 3)
    return ReportData(run, [(0, 10, 40, 0.25), (3, 29, 40, 0.725)], versions, stats, T0 + timedelta(seconds=40))


class Page(HTMLParser):
    """The charts (their titles, the points of each series), every table cell, and the spec."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: list[str] = []
        self.series: dict[tuple[str, str], int] = {}  # (chart, label) -> points
        self.cells: list[str] = []
        self.spec = ""
        self.fetches: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg":
            self.charts.append(a["data-title"] or "")
        elif tag == "polyline":
            self.series[(self.charts[-1], a["data-label"] or "")] = len((a["points"] or "").split())
        elif tag == "td":
            self._in = tag
            self.cells.append("")
        elif tag == "pre":
            self._in = tag
        self.fetches += [v or "" for k, v in attrs if k in ("src", "href")]

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, text: str) -> None:
        if self._in == "td":
            self.cells[-1] += text
        elif self._in == "pre":
            self.spec += text


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(1.0, 50.0) == [0.0, 20.0, 40.0, 60.0]
    assert nice_ticks(3.0, 3.0) == [2.6, 2.8, 3.0, 3.2, 3.4]  # one value: a range around it
    assert nice_ticks(1.0, 3.0, min_step=1.0) == [1.0, 2.0, 3.0]  # versions: whole numbers
    ticks = nice_ticks(-0.013, 0.041)
    assert ticks[0] <= -0.013 and ticks[-1] >= 0.041 and len(ticks) <= 8


def test_a_chart_leaves_out_non_finite_points_and_says_when_it_has_none():
    svg = line_chart("loss", "version", [Series("loss", [(1, 0.5), (2, float("nan")), (3, 0.2)], "red")])
    page = Page()
    page.feed(svg)
    assert page.series == {("loss", "loss"): 2}
    assert "no data" in line_chart("kl", "version", [Series("kl", [], "red")])


def test_throughput_is_trained_samples_per_second_between_versions():
    assert throughput(T0, data().versions) == [(1, 0.8), (2, 0.8), (3, 0.8)]


def test_the_page_has_every_curve_the_numbers_and_the_spec():
    page = Page()
    page.feed(build_html(data("FAILED", "trainer: <loss> is nan")))
    assert page.charts == [
        "held-out accuracy",
        "mean reward",
        "staleness (versions)",
        "throughput (trained samples/s)",
        "top answer's share of the trained samples",
        "trainer: kl",
        "trainer: loss",
        "trainer: lr",
    ]
    assert page.series[("held-out accuracy", "accuracy")] == 2
    assert page.series[("mean reward", "reward")] == 3
    assert page.series[("staleness (versions)", "max")] == 3
    assert page.series[("trainer: loss", "loss")] == 3
    assert page.series[("top answer's share of the trained samples", "top answer")] == 2  # v2 had no answer
    for shown in ("arith-1", "FAILED", "trainer: <loss> is nan", "72.5% (v3, 29/40)", "24 trained / 24 generated"):
        assert shown in page.cells
    assert ["3", "30.0", "24", "0.875", "1.25", "2", "0.8", "72.5%", "25%", "0.03", "0.1667", "0.001"] in [
        page.cells[i : i + 12] for i in range(len(page.cells))
    ]
    assert page.spec == SPEC
    assert page.fetches == []  # self-contained: nothing to fetch


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-headless-shell")
    assert found, "no headless Chromium: scripts/setup.sh installs Debian's (apt-get install chromium)"
    return found


def test_headless_chromium_draws_the_curves(chromium, tmp_path: Path):
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(build_html(data()), encoding="utf-8")
    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
         "--window-size=1200,1400", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    colors = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20) or []
    counts = {f"#{r:02x}{g:02x}{b:02x}": n for n, (r, g, b) in colors}
    # the reward and throughput lines are drawn (anti-aliasing leaves the exact colour on the stroke)
    assert counts.get(ORANGE, 0) > 100 and counts.get(PURPLE, 0) > 100, sorted(counts.items(), key=lambda c: -c[1])[:8]
