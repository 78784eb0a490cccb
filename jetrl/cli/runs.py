"""`jetrl run`, `jetrl status`, `jetrl bootstrap`: talking to a running stack."""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
from rich.console import Console

from jetrl.cli.manage import follow, runs_table
from jetrl.config import RunSpec, Settings
from jetrl.rpc import channel
from jetrl.spec_sections import TaskSpec
from jetrl.v1 import services_pb2, services_pb2_grpc

console = Console(stderr=True)


def default_model_dir(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "models" / "tiny-arith"


def export_data_dir(settings: Settings) -> None:
    """Run specs say `${JETRL_DATA_DIR}`: make it resolve here exactly as in the services."""
    os.environ["JETRL_DATA_DIR"] = str(settings.data_dir.resolve())


def bootstrap(settings: Settings, out: Path | None, force: bool, task: TaskSpec | None = None, seed: int = 0) -> Path:
    """Version 0 at `out` by the warm-up from `seed`'s initialisation, unless one is there already."""
    from jetrl.policy.bootstrap import bootstrap_with_progress

    out = out or default_model_dir(settings)
    if (out / "config.json").exists() and not force:
        console.print(f"starting checkpoint already at {out} (--force rebuilds it)")
        return out
    bootstrap_with_progress(out, task or TaskSpec(), console, seed=seed)
    return out


async def submit_and_watch(settings: Settings, spec: RunSpec, spec_yaml: str, run_id: str, detach: bool) -> int:
    """Create the run of `spec_yaml` (whose parsed form is `spec`) and follow it unless `detach`."""
    export_data_dir(settings)
    async with channel(settings.scheduler_addr, settings) as ch:
        stub = services_pb2_grpc.SchedulerServiceStub(ch)
        try:
            run = await stub.CreateRun(services_pb2.CreateRunRequest(spec_yaml=spec_yaml, run_id=run_id))
        except grpc.aio.AioRpcError as exc:
            console.print(f"[red]run refused[/red] ({exc.code().name}): {exc.details()}")
            return 2
    console.print(
        f"run [bold]{run.run_id}[/bold] created ({spec.train.steps} steps, "
        f"B={spec.train.batch_groups} groups × G={spec.rollout.group_size})"
    )
    if detach:
        print(run.run_id)
        return 0
    return await follow(settings, run.run_id)


async def status(settings: Settings) -> bool:
    from jetrl.cli.stack import status as stack_status

    healthy = stack_status(settings)
    if not healthy:
        return False
    async with channel(settings.scheduler_addr, settings) as ch:
        runs = await services_pb2_grpc.SchedulerServiceStub(ch).ListRuns(services_pb2.ListRunsRequest(), timeout=10)
    console.print(runs_table(runs.runs, time.time()))
    return True
