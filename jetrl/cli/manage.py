"""`jetrl runs`, `jetrl watch RUN`, `jetrl stop RUN`: the runs a scheduler knows, over its gRPC API
(SchedulerService: ListRuns, WatchRun, StopRun), with the stack's credentials (jetrl/rpc.py).

`follow` is what `jetrl run` and `jetrl watch` both end with: the live progress of jetrl/cli/watch.py
until the run ends, then its final state and message, and an exit code that says whether it completed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import grpc
import yaml
from rich.console import Console
from rich.table import Table

from jetrl.cli.watch import describe, watch
from jetrl.config import Settings
from jetrl.rpc import channel
from jetrl.v1 import services_pb2, services_pb2_grpc

__all__ = ["STATE_NAMES", "follow", "list_runs", "run_rows", "runs_table", "stop_run", "rpc_failure"]

console = Console(stderr=True)  # progress and problems
out = Console()  # what a command answers: the table, the state a stopped run is in
STATE_NAMES = {v: k for k, v in services_pb2.RunState.items()}
STATE_STYLES = {"RUNNING": "blue", "COMPLETED": "green", "STOPPED": "yellow", "FAILED": "red"}
COLUMNS = ("run", "name", "state", "version", "held-out", "samples", "age", "message")


def rpc_failure(exc: grpc.aio.AioRpcError, settings: Settings, run_id: str = "") -> str:
    """What a failed scheduler call means for the person who typed the command, and what to do."""
    if exc.code() == grpc.StatusCode.NOT_FOUND and run_id:
        return f"no run {run_id}; `jetrl runs` lists them"
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return (
            f"the scheduler at {settings.scheduler_addr} does not answer ({exc.details()}); "
            "`jetrl status` checks the stack, JETRL_SCHEDULER_ADDR points elsewhere"
        )
    return f"{exc.code().name}: {exc.details()}"


def duration(seconds: float) -> str:
    """A short human duration: 45s, 12m, 3h 05m, 2d 03h."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def run_rows(runs: Sequence[services_pb2.Run], now: float) -> list[tuple[str, ...]]:
    """One row of COLUMNS per run, newest first."""
    rows: list[tuple[str, ...]] = []
    for r in sorted(runs, key=lambda r: r.created_at, reverse=True):
        p = r.progress
        name = (yaml.safe_load(r.spec_yaml) or {}).get("name", "") if r.spec_yaml else ""
        heldout = f"{p.heldout_accuracy:.1%} (v{p.heldout_version})" if p.heldout_version >= 0 else "–"
        rows.append(
            (
                r.run_id,
                str(name),
                STATE_NAMES.get(p.state, "?"),
                f"{p.policy_version}/{p.total_steps}",
                heldout,
                f"{p.samples_trained}/{p.samples_generated}",
                duration(now - r.created_at) if r.created_at else "?",
                p.message,
            )
        )
    return rows


def runs_table(runs: Sequence[services_pb2.Run], now: float) -> Table:
    """The runs as a rich table (`jetrl runs`, `jetrl status`); samples are trained/generated."""
    table = Table(title="runs")
    for col in COLUMNS:
        table.add_column(col, overflow="fold", justify="right" if col in ("version", "samples", "age") else "left")
    for row in run_rows(runs, now):
        style = STATE_STYLES.get(row[2], "")
        table.add_row(*row[:2], f"[{style}]{row[2]}[/{style}]" if style else row[2], *row[3:])
    return table


async def list_runs(settings: Settings) -> int:
    try:
        async with channel(settings.scheduler_addr, settings) as ch:
            reply = await services_pb2_grpc.SchedulerServiceStub(ch).ListRuns(
                services_pb2.ListRunsRequest(), timeout=30
            )
    except grpc.aio.AioRpcError as exc:
        console.print(f"[red]jetrl runs:[/red] {rpc_failure(exc, settings)}")
        return 1
    if not reply.runs:
        console.print("no runs yet; `jetrl run SPEC` starts one")
        return 0
    out.print(runs_table(reply.runs, time.time()))
    return 0


async def follow(settings: Settings, run_id: str) -> int:
    """Live progress until the run ends, then its final state and message; 0 when it COMPLETED."""
    try:
        last = await watch(settings, run_id)
    except grpc.aio.AioRpcError as exc:
        console.print(f"[red]jetrl watch:[/red] {rpc_failure(exc, settings, run_id)}")
        return 2
    state = STATE_NAMES.get(last.state, "?")
    console.print(f"run {run_id} {state}: {describe(last)}" + (f" — {last.message}" if last.message else ""))
    return 0 if last.state == services_pb2.COMPLETED else 1


async def stop_run(settings: Settings, run_id: str, reason: str) -> int:
    """StopRun; prints the state the run is in afterwards."""
    try:
        async with channel(settings.scheduler_addr, settings) as ch:
            run = await services_pb2_grpc.SchedulerServiceStub(ch).StopRun(
                services_pb2.StopRunRequest(run_id=run_id, reason=reason), timeout=60
            )
    except grpc.aio.AioRpcError as exc:
        hint = "; only a RUNNING run can be stopped" if exc.code() == grpc.StatusCode.FAILED_PRECONDITION else ""
        console.print(f"[red]jetrl stop:[/red] {rpc_failure(exc, settings, run_id)}{hint}")
        return 1
    p = run.progress
    out.print(f"run {run_id} {STATE_NAMES.get(p.state, '?')}" + (f": {p.message}" if p.message else ""))
    return 0
