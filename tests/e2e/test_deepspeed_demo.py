"""The demo with the trainer on two DeepSpeed ZeRO-2 CPU ranks, whole (`slow`: about 3 minutes):
`jetrl demo` with examples/arithmetic-deepspeed.yaml on a stack of its own runs through the four
services to the end and gains at least 25 held-out points, every sample in lineage once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

from jetrl.lineage.db import make_engine  # noqa: E402
from jetrl.lineage.store import LineageStore  # noqa: E402
from runs import run_demo  # noqa: E402

pytestmark = [pytest.mark.deepspeed, pytest.mark.slow, pytest.mark.timeout(1200)]
SPEC = Path(__file__).resolve().parents[2] / "examples" / "arithmetic-deepspeed.yaml"


def test_the_demo_on_two_deepspeed_ranks_gains_25_points(database_url, tmp_path, monkeypatch):
    settings, run_id, _ = run_demo(SPEC, tmp_path, database_url, monkeypatch)
    assert asyncio.run(_trained(settings.database_url, run_id)) == 50 * 16 * 8
    assert sorted(p.name for p in (settings.data_dir / "runs" / run_id / "deepspeed").iterdir()) == [
        "v000049",
        "v000050",
    ]  # the recorded checkpoint and the one before it; older ones pruned


async def _trained(database_url: str, run_id: str) -> int:
    engine = make_engine(database_url)
    try:
        return len(await LineageStore(engine).reports.trained_sample_rows(run_id))
    finally:
        await engine.dispose()
