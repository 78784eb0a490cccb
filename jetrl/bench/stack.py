"""What the benches share: a private stack, and following one run on it (`jetrl chaos` starts
its stack with `private_stack` too).

The private stack is the local-stack launcher's (jetrl/cli/stack.py `isolated_settings`, `up`,
`down`) under a temp dir with a database of its own, so a running stack is never disturbed;
everything it starts it ends, by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table
from sqlalchemy.engine import make_url

from jetrl.config import RunSpec, Settings, dump_spec
from jetrl.rpc import channel
from jetrl.v1 import services_pb2, services_pb2_grpc

__all__ = [
    "console",
    "bench_database_url",
    "private_stack",
    "RunRecord",
    "LiveStatus",
    "follow_run",
    "follow_all",
]

console = Console(stderr=True)


def bench_database_url(args: argparse.Namespace, settings: Settings) -> str:
    """--database-url, else database `jetrl_bench` on the settings' server; always psycopg 3."""
    url = make_url(args.database_url or settings.database_url)
    if not args.database_url:
        url = url.set(database="jetrl_bench")
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")  # the bench reads lineage with a sync engine too
    return url.render_as_string(hide_password=False)


@contextmanager
def private_stack(database_url: str, logs_to: Path | None = None, **overrides) -> Iterator[Settings]:
    """A stack of its own under a temp dir (`overrides`: more Settings fields); everything started
    here is ended here, by pid. The services' logs are copied to `logs_to` at the end when given
    (the temp dir goes away)."""
    from jetrl.cli.stack import down, isolated_settings, up

    with tempfile.TemporaryDirectory(prefix="jetrl-bench-") as tmp:
        settings = isolated_settings(Path(tmp), database_url, **overrides)
        try:
            up(settings, timeout=180)
            console.print(f"  private stack up: {settings.nats_url}, data in {settings.data_dir}")
            yield settings
        finally:
            down(settings)
            if logs_to is not None and (settings.data_dir / "logs").is_dir():
                shutil.copytree(settings.data_dir / "logs", logs_to, dirs_exist_ok=True)
                console.print(f"  service logs copied to {logs_to}")


@dataclass
class RunRecord:
    """One run as the bench saw it: its end state, wall time, and rollout-worker snapshots taken
    when each version was first seen (monotonic s, tokens generated, busy seconds)."""

    run_id: str
    state: str = "PENDING"
    message: str = ""
    wall_s: float = 0.0
    busy_s: float = 0.0
    snapshots: dict[int, tuple[float, int, float]] = field(default_factory=dict)
    last: services_pb2.RunProgress | None = None

    def rollout_tps(self, warmup: int) -> float | None:
        """Generated tokens/s between the first sight of version `warmup` (or the next one seen,
        when progress skipped it) and of the last version; None without two distinct sightings."""
        seen = [v for v in self.snapshots if v >= warmup]
        if len(seen) < 2:
            return None
        (t0, n0, _), (t1, n1, _) = self.snapshots[min(seen)], self.snapshots[max(seen)]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None


class LiveStatus:
    """The rich live view of a bench: one line per run, updated from its WatchRun progress."""

    def __init__(self, title: str, names: list[str]):
        self.title = title
        self.lines = {n: ("pending", "", "", "") for n in names}

    def update(self, name: str, record: RunRecord) -> None:
        p = record.last
        version = f"{p.policy_version}/{p.total_steps}" if p else ""
        accuracy = f"{p.heldout_accuracy:.1%} (v{p.heldout_version})" if p and p.heldout_version >= 0 else ""
        self.lines[name] = (record.state.lower(), version, accuracy, f"{record.wall_s:.0f} s")

    def render(self) -> Table:
        table = Table(title=self.title)
        for col in ("run", "state", "version", "held-out", "elapsed"):
            table.add_column(col)
        for name, line in self.lines.items():
            table.add_row(name, *line)
        return table


async def follow_run(
    settings: Settings, run_id: str, spec_yaml: str, timeout: float, on_progress: Callable[[RunRecord], None]
) -> RunRecord:
    """Submit a run, follow it to its end (stopping it after `timeout` s), snapshotting the
    rollout worker's counters whenever a new version shows up."""
    record = RunRecord(run_id)
    async with channel(settings.scheduler_addr, settings) as sch, channel(settings.rollout_addr, settings) as rch:
        scheduler = services_pb2_grpc.SchedulerServiceStub(sch)
        rollout = services_pb2_grpc.RolloutServiceStub(rch)

        async def snapshot() -> tuple[float, int, float]:
            s = await rollout.GetStatus(services_pb2.RolloutStatusRequest(), timeout=10)
            return time.monotonic(), s.tokens_generated, s.busy_seconds

        start = await snapshot()
        await scheduler.CreateRun(services_pb2.CreateRunRequest(spec_yaml=spec_yaml, run_id=run_id), timeout=60)

        async def watch() -> None:
            async for progress in scheduler.WatchRun(services_pb2.WatchRunRequest(run_id=run_id)):
                if progress.policy_version not in record.snapshots:
                    record.snapshots[progress.policy_version] = await snapshot()
                record.last = progress
                record.state = services_pb2.RunState.Name(progress.state)
                record.wall_s = time.monotonic() - start[0]
                on_progress(record)

        try:
            await asyncio.wait_for(watch(), timeout)
        except TimeoutError:
            await scheduler.StopRun(services_pb2.StopRunRequest(run_id=run_id, reason="bench timeout"), timeout=30)
            record.state, record.message = "TIMEOUT", f"stopped after {timeout:.0f} s"
        end = await snapshot()
    record.wall_s, record.busy_s = end[0] - start[0], end[2] - start[2]
    if record.last is not None and record.last.message and not record.message:
        record.message = record.last.message
    return record


def follow_all(settings: Settings, title: str, runs: list[tuple[str, RunSpec]], timeout: float) -> list[RunRecord]:
    """Run each (label, spec), one after the other, to its end under a live status view."""
    status = LiveStatus(title, [label for label, _ in runs])
    records = []
    with Live(get_renderable=status.render, console=console, refresh_per_second=4):
        for label, spec in runs:
            run_id = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            record = asyncio.run(follow_run(settings, run_id, dump_spec(spec), timeout, partial(status.update, label)))
            status.update(label, record)
            records.append(record)
    console.line()  # the live view's last frame ends without one
    return records
