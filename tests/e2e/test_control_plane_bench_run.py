"""`jetrl bench control-plane` end to end: its own private stack, 1 then 2 rollout workers, raw
JetStream on the same nats-server. Small runs: the figures must be consistent, not fast."""

import json

import pytest

from jetrl.bench import run
from jetrl.bench.control_plane_procs import POSTGRES
from jetrl.bench.control_plane_rows import STACK
from jetrl.cli.main import _parser

STEPS, WARMUP, B, G = 4, 1, 4, 4


@pytest.mark.slow
def test_bench_control_plane_measures_every_worker_count(database_url, tmp_path):
    args = _parser().parse_args(
        ["bench", "control-plane", "--workers", "2", "1", "--steps", str(STEPS), "--warmup", str(WARMUP)]
        + ["--batch-groups", str(B), "--group-size", str(G), "--raw-messages", "2000"]
        + ["--database-url", database_url, "--out", str(tmp_path), "--markdown", str(tmp_path / "cp.md")]
    )
    assert run(args) == 0

    payload = json.loads((tmp_path / "control_plane.json").read_text())
    raw = payload["raw"]
    assert raw["sample_bytes"] > 0 and raw["messages"] == 2000
    assert raw["publish_rate"] > 0 and raw["consume_rate"] > 0
    rows = payload["results"]
    assert [r["workers"] for r in rows] == [1, 2]  # in increasing order, whatever the order given
    for row in rows:
        assert row["state"] == "COMPLETED", row["message"]
        assert row["samples_trained"] == STEPS * B * G
        assert row["window_versions"] == [WARMUP, STEPS] and row["window_samples"] == (STEPS - WARMUP) * B * G
        assert row["samples_per_s"] > 0
        assert row["of_raw_publish"] == pytest.approx(row["samples_per_s"] / raw["publish_rate"])
        assert row["of_raw_consume"] == pytest.approx(row["samples_per_s"] / raw["consume_rate"])
        assert 0 < row["overhead_p50_ms"] <= row["overhead_p90_ms"]
        assert row["to_seal_p50_ms"] >= 0 and row["to_announce_p50_ms"] >= 0
        cpu = row["cpu_s"]
        assert {"svc_scheduler", "svc_reward", "svc_trainer", "svc_rollout", "nats-server", POSTGRES} <= set(cpu)
        assert all(seconds >= 0 for seconds in cpu.values()) and cpu[STACK] > 0
    assert "svc_rollout-2" not in rows[0]["cpu_s"] and rows[1]["cpu_s"]["svc_rollout-2"] >= 0
    assert len(payload["targets"]) == 3 * 2 + 1
    assert all(g["met"] in (True, False) for g in payload["targets"])
    assert "### raw JetStream" in (tmp_path / "cp.md").read_text()
