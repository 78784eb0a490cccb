"""`jetrl bench peer` end to end: a private stack for the jetrl arms (η = 0 and 2), TRL's
GRPOTrainer in a process of its own, both from one short-bootstrapped version 0. Short runs: the
figures must be consistent, not good. Needs the `peer` extra (pip install -e '.[peer]')."""

import importlib.util
import json

import pytest

from jetrl.bench import run
from jetrl.bench.control_plane_procs import POSTGRES
from jetrl.bench.peer_report import DIFFERENCES, TRL
from jetrl.cli.main import _parser
from jetrl.policy.bootstrap import bootstrap
from jetrl.spec_sections import TaskSpec

STEPS = 3

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("trl") is None,
        reason="TRL is not installed: jetrl bench peer needs the `peer` extra (pip install -e '.[peer]')",
    ),
]


def test_bench_peer_runs_both_arms_from_one_version_0(database_url, tmp_path):
    model = tmp_path / "v0"
    bootstrap(model, TaskSpec(), steps=30)
    args = _parser().parse_args(
        ["bench", "peer", "--seeds", "0", "--etas", "0", "2", "--steps", str(STEPS), "--target", "0.0"]
        + ["--model", str(model), "--torch-threads", "1", "--database-url", database_url]
        + ["--out", str(tmp_path / "out"), "--markdown", str(tmp_path / "peer.md"), "--logs", str(tmp_path / "logs")]
    )
    assert run(args) == 0

    payload = json.loads((tmp_path / "out" / "peer_bench.json").read_text())
    assert payload["model_dir"] == str(model) and payload["steps"] == STEPS and payload["torch_threads"] == 1
    assert payload["differences"] == DIFFERENCES
    rows = {r["arm"]: r for r in payload["results"]}
    assert set(rows) == {"jetrl η=0", "jetrl η=2", TRL}
    for arm, row in rows.items():
        assert row["state"] == "COMPLETED", (arm, row.get("message"), row.get("log"))
        assert row["final_version"] == STEPS and row["curve"][0]["version"] == 0
        assert row["wall_s"] > 0 and row["cpu_s"] > 0 and row["peak_rss_mb"] > 50
        assert 0 < row["first_step_s"] < row["wall_s"] and row["later_steps_s"] == pytest.approx(
            row["wall_s"] - row["first_step_s"]
        )
        # target 0: reached at version 0, at 0 s
        assert row["version_at_target"] == 0 and row["time_to_target_s"] == 0.0
        # one version 0: both arms score it with the same greedy function
        assert row["curve"][0]["accuracy"] == rows[TRL]["curve"][0]["accuracy"]
    for eta in (0, 2):
        row = rows[f"jetrl η={eta}"]
        assert row["versions_made"] == STEPS and row["peaks_reset"] is True
        assert {"svc_scheduler", "svc_reward", "svc_trainer", "svc_rollout", "nats-server", POSTGRES} <= set(
            row["cpu_by_process"]
        )
        assert row["waiting_s"] + row["training_s"] == pytest.approx(row["wall_s"])
        # every batch's path is dated from lineage, hop by hop
        assert all(row[f"{hop}_p50_ms"] > 0 for hop in ("admission", "generation", "reward", "sealing"))
        assert row["wall_vs_trl"] == pytest.approx(row["wall_s"] / rows[TRL]["wall_s"])
    trl = rows[TRL]
    assert trl["steps"] == STEPS and trl["torch_threads"] == 1 and trl["versions"]["trl"]
    assert trl["wall_with_eval_s"] == pytest.approx(trl["wall_s"] + trl["eval_s"])
    assert trl["trl_config"]["num_generations"] == 8 and trl["trl_config"]["shuffle_dataset"] is False
    assert "Differences that could not be removed" in (tmp_path / "peer.md").read_text()
    assert (tmp_path / "logs" / "svc_trainer.log").exists()
