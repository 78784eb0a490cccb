"""Live progress of a run (`jetrl run`, `jetrl demo`): a progress bar and a status line per update."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from jetrl.config import Settings
from jetrl.rpc import channel
from jetrl.v1 import services_pb2, services_pb2_grpc

console = Console(stderr=True)


def describe(p: services_pb2.RunProgress) -> str:
    acc = f"{p.heldout_accuracy:.1%} (v{p.heldout_version})" if p.heldout_version >= 0 else "pending"
    reward = "-" if math.isnan(p.mean_reward) else f"{p.mean_reward:.3f}"
    dead = f"  [red]dead letters {p.dead_letters}[/red]" if p.dead_letters else ""
    stale = (
        f"  staleness {p.mean_staleness:.2f}/{p.max_staleness}  off-policy {p.offpolicy_token_share:.0%}"
        if p.max_staleness or p.offpolicy_token_share
        else ""
    )
    masked = f"  stale-masked {p.stale_masked_tokens}" if p.stale_masked_tokens else ""
    partial = f"  partial {p.partial_groups}" if p.partial_groups else ""
    failed = (
        f"  [red]reward failures {p.reward_failures} (dropped {p.groups_dropped})[/red]" if p.reward_failures else ""
    )
    filtered = f"  filtered {p.groups_filtered}" if p.groups_filtered else ""
    teacher = f"  teacher v{p.teacher_version}" if p.teacher_version >= 0 else ""
    gap = f"  logprob gap {p.logprob_gap_mean:.1e} (max {p.logprob_gap_max:.1e})" if p.logprob_gap_mean >= 0 else ""
    return (
        f"reward {reward}  held-out {acc}  {p.samples_per_second:.1f} samples/s  "
        f"trained {p.samples_trained}/{p.samples_generated}  in flight {p.groups_running}"
        f"{partial}{stale}{masked}{filtered}{teacher}{gap}{collapse_signs(p)}{failed}{dead}"
    )


def collapse_signs(p: services_pb2.RunProgress) -> str:
    """The newest version's entropy, KL and top-answer share, those known (collapse in sight)."""
    signs = [
        f"{name} {fmt.format(value)}"
        for name, value, fmt in (
            ("entropy", p.entropy, "{:.3g}"),
            ("KL", p.kl, "{:.2g}"),
            ("top answer", p.top_answer_share, "{:.0%}"),
        )
        if not math.isnan(value)
    ]
    return "  " + "  ".join(signs) if signs else ""


def reward_failure(p: services_pb2.RunProgress) -> str:
    """A line for a new reward failure: what failed, what the run does, what to do about it."""
    return (
        f"[red]reward failed: {p.last_reward_error}[/red] ({p.reward_failures} groups so far, "
        f"{p.groups_dropped} dropped); the run follows its reward.on_failure. Bring the server back "
        f"(`jetrl reward check HOST:PORT` tells when it answers) and the run uses it again."
    )


async def watch(settings: Settings, run_id: str) -> services_pb2.RunProgress:
    """Follow WatchRun until the run leaves RUNNING; returns the last progress."""
    last = None
    async with channel(settings.scheduler_addr, settings) as ch:
        stub = services_pb2_grpc.SchedulerServiceStub(ch)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task(f"{run_id} version", total=None, status="starting…")
            async for progress in stub.WatchRun(services_pb2.WatchRunRequest(run_id=run_id)):
                if progress.heldout_version >= 0 and (last is None or progress.heldout_version != last.heldout_version):
                    # each evaluation gets its own line, so the accuracy curve stays on screen
                    bar.console.log(
                        f"version {progress.heldout_version}: held-out accuracy "
                        f"{progress.heldout_accuracy:.1%}, mean reward {progress.mean_reward:.3f}"
                    )
                if progress.last_reward_error and (
                    last is None or progress.last_reward_error != last.last_reward_error
                ):
                    bar.console.log(reward_failure(progress))
                if progress.collapse_warning and (last is None or progress.collapse_warning != last.collapse_warning):
                    bar.console.log(f"[yellow]{progress.collapse_warning}[/yellow]")
                last = progress
                bar.update(
                    task, total=progress.total_steps, completed=progress.policy_version, status=describe(progress)
                )
    if last is None:
        raise RuntimeError(f"the scheduler ended WatchRun of {run_id} without sending any progress")
    return last
