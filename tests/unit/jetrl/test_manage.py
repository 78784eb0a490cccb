"""`jetrl runs`, `watch`, `stop` (jetrl/cli/manage.py): the runs table and what a failed call tells."""

from __future__ import annotations

import grpc
from rich.console import Console

from jetrl.cli.manage import duration, rpc_failure, run_rows, runs_table
from jetrl.config import Settings
from jetrl.v1 import services_pb2 as svc

NOW = 1_700_000_000.0


def run(run_id: str, age_s: float, **progress) -> svc.Run:
    fields = {"state": svc.RUNNING, "heldout_version": -1, "total_steps": 50, **progress}
    return svc.Run(
        run_id=run_id,
        spec_yaml="name: arith\nmodel: {path: /m}\n",
        created_at=NOW - age_s,
        progress=svc.RunProgress(run_id=run_id, **fields),
    )


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (-1, 45, 12 * 60 + 5, 3 * 3600 + 5 * 60, 2 * 86400 + 3 * 3600)] == [
        "0s",
        "45s",
        "12m",
        "3h 05m",
        "2d 03h",
    ]


def test_rows_show_state_progress_accuracy_samples_age_and_message_newest_first():
    runs = [
        run("old", 7200, state=svc.FAILED, policy_version=3, message="trainer: loss is nan"),
        run(
            "new",
            30,
            policy_version=7,
            heldout_version=5,
            heldout_accuracy=0.625,
            samples_trained=56,
            samples_generated=70,
        ),
    ]
    assert run_rows(runs, NOW) == [
        ("new", "arith", "RUNNING", "7/50", "62.5% (v5)", "56/70", "30s", ""),
        ("old", "arith", "FAILED", "3/50", "–", "0/0", "2h 00m", "trainer: loss is nan"),
    ]
    console = Console(record=True, width=160)
    console.print(runs_table(runs, NOW))
    text = console.export_text()
    assert "62.5% (v5)" in text and "trainer: loss is nan" in text and "held-out" in text


def test_a_failed_call_says_what_to_do():
    settings = Settings(scheduler_addr="127.0.0.1:1")

    def failure(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)

    assert rpc_failure(failure(grpc.StatusCode.NOT_FOUND, "no run 'x'"), settings, "x") == (
        "no run x; `jetrl runs` lists them"
    )
    unavailable = rpc_failure(failure(grpc.StatusCode.UNAVAILABLE, "connection refused"), settings, "x")
    assert "127.0.0.1:1 does not answer (connection refused)" in unavailable and "jetrl status" in unavailable
    assert rpc_failure(failure(grpc.StatusCode.FAILED_PRECONDITION, "run 'x' is COMPLETED"), settings, "x") == (
        "FAILED_PRECONDITION: run 'x' is COMPLETED"
    )
