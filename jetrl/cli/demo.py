"""`jetrl demo`: the whole system on one machine, from nothing to a trained policy.

It starts the stack, makes the tiny starting checkpoint, trains the example run to the end, and
reports the held-out accuracy of version 0 and of the final version, and where the lineage is.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from jetrl.config import RunSpec, Settings, dump_spec, load_spec
from jetrl.rpc import channel
from jetrl.v1 import services_pb2, services_pb2_grpc

console = Console()


async def _audit(settings: Settings, run_id: str):
    """Evaluations and lineage rows of the run, and the trainer's own count, for the report."""
    from jetrl.lineage.store import open_store

    async with open_store(settings.database_url) as store:
        evaluations = await store.reports.evaluations(run_id)
        rows = await store.reports.trained_sample_rows(run_id)
    async with channel(settings.trainer_addr, settings) as ch:
        trainer = await services_pb2_grpc.TrainerServiceStub(ch).GetStatus(
            services_pb2.TrainerStatusRequest(run_id=run_id), timeout=10
        )
    return evaluations, rows, trainer


def demo(settings: Settings, spec_path: Path, keep_running: bool, seed: int | None = None) -> int:
    """Up, version 0, the run, its report, down. `seed` (default: the spec's) sets both the
    warm-up's initialisation and the run's sampling; a seed other than the spec's gets a version 0
    of its own (`<model dir>-s<seed>`), so the seeds' demos can be compared."""
    from jetrl.cli.runs import bootstrap, export_data_dir, submit_and_watch
    from jetrl.cli.stack import down, up

    started = time.monotonic()
    export_data_dir(settings)
    spec, spec_yaml = seeded(load_spec(spec_path), spec_path.read_text(), seed)
    try:
        up(settings)  # inside: whatever it started before a failure is stopped too
        bootstrap(settings, Path(spec.model.path), force=False, task=spec.task, seed=spec.seed)
        run_id = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        code = asyncio.run(submit_and_watch(settings, spec, spec_yaml, run_id, detach=False))
        if code:
            return code
        evaluations, rows, trainer = asyncio.run(_audit(settings, run_id))
        report(settings, run_id, evaluations, rows, trainer, time.monotonic() - started)
        return 0
    finally:
        if not keep_running:
            down(settings)


def seeded(spec: RunSpec, spec_yaml: str, seed: int | None) -> tuple[RunSpec, str]:
    """The spec (and its YAML) with `seed` as its seed and a version 0 of the seed's own, when
    `seed` is another than the spec's; else the spec as it is."""
    if seed is None or seed == spec.seed:
        return spec, spec_yaml
    model = spec.model.model_copy(update={"path": f"{spec.model.path}-s{seed}"})
    spec = spec.model_copy(update={"seed": seed, "model": model})
    return spec, dump_spec(spec)


def report(settings: Settings, run_id: str, evaluations, rows, trainer, seconds: float) -> None:
    table = Table(title=f"held-out accuracy of {run_id}")
    table.add_column("version", justify="right")
    table.add_column("correct", justify="right")
    table.add_column("accuracy", justify="right")
    for version, correct, total, accuracy in evaluations:
        table.add_row(str(version), f"{correct}/{total}", f"{accuracy:.1%}")
    console.print(table)
    first, last = evaluations[0], evaluations[-1]
    console.print(
        f"version {first[0]}: [bold]{first[3]:.1%}[/bold]  →  version {last[0]}: [bold]{last[3]:.1%}[/bold]"
        f"  ({(last[3] - first[3]) * 100:+.1f} points) in {seconds / 60:.1f} min"
    )
    complete = sum(r.reward is not None and r.advantage is not None and r.trained_version is not None for r in rows)
    agree = "[green]agree[/green]" if len(rows) == trainer.samples_trained == complete else "[red]DISAGREE[/red]"
    console.print(
        f"lineage: {len(rows)} trained samples recorded, {complete} with generating version, reward, "
        f"advantage and trained version; the trainer counts {trainer.samples_trained}: {agree}"
    )
    console.print(
        f"lineage is in {settings.database_url}, e.g.\n  psql {_psql_url(settings.database_url)} -c "
        f'"SELECT sample_id, min_version, reward, advantage, trained_version FROM samples '
        f"WHERE run_id = '{run_id}' LIMIT 10\""
    )
    console.print(f"checkpoints are in {trainer.checkpoint_dir}")


def _psql_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)
