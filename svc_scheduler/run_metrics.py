"""Each recorded version's training metrics, written where users look: TensorBoard event files
under `<data dir>/tensorboard/<run id>/`, and a Weights & Biases run (its offline directory under
`<data dir>/wandb/`), as the run's `metrics` section asks.

One component writes them: the scheduler's recorder, as it records a version (and an
evaluation), from what lineage holds then: the trainer's metrics dict, the mean reward and
staleness of the samples that trained the version, samples/s since the version before, and
held-out accuracy. The step of every point is the policy version. Writing is best effort: a
destination that cannot be opened or written is logged, and the run goes on (lineage stays the
record). A version redelivered after a crash may be written twice at its step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from jetrl.config import RunSpec
from jetrl.lineage.reports import VersionPoint
from jetrl.logs import log_fields
from jetrl.spec_sections import WandbSpec

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"  # under the data directory: `tensorboard --logdir <data dir>/tensorboard`
WANDB_DIR = "wandb"  # under the data directory; W&B puts its run directories in a `wandb/` of its own
STEP = "policy_version"  # W&B's x axis: a point of an earlier version may come late (an evaluation)


class Tag:
    """The scalars' names, grouped as TensorBoard shows them (the trainer's metrics: `train/<key>`)."""

    TRAIN = "train/"
    REWARD = "reward/mean"
    STALENESS_MEAN = "staleness/mean"
    STALENESS_MAX = "staleness/max"
    SAMPLES_PER_S = "throughput/samples_per_s"
    SAMPLES_TRAINED = "throughput/samples_trained"
    ACCURACY = "eval/heldout_accuracy"
    TOP_ANSWER = "answers/top_share"  # the most common answer's share of the version's samples


def version_scalars(points: list[VersionPoint], version: int) -> dict[str, float]:
    """The scalars of one version, from the run's version points (the one before it gives samples/s)."""
    by_version = {p.version: p for p in points}
    point = by_version[version]
    scalars = {f"{Tag.TRAIN}{key}": value for key, value in point.metrics.items()}
    scalars[Tag.SAMPLES_TRAINED] = float(point.samples_trained_total)
    if point.mean_reward is not None:
        scalars[Tag.REWARD] = point.mean_reward
    if point.mean_staleness is not None:
        scalars[Tag.STALENESS_MEAN] = point.mean_staleness
    if point.max_staleness is not None:
        scalars[Tag.STALENESS_MAX] = float(point.max_staleness)
    if point.top_answer_share is not None:
        scalars[Tag.TOP_ANSWER] = point.top_answer_share
    if (before := by_version.get(version - 1)) is not None:
        seconds = (point.created_at - before.created_at).total_seconds()
        if seconds > 0:
            scalars[Tag.SAMPLES_PER_S] = (point.samples_trained_total - before.samples_trained_total) / seconds
    return scalars


class Sink(Protocol):
    def write(self, step: int, scalars: dict[str, float], walltime: float) -> None: ...

    def close(self) -> None: ...


class EventFile:
    """A run's TensorBoard event file (a new one each time the scheduler opens it; TensorBoard reads all)."""

    def __init__(self, directory: Path):
        self.writer = EventFileWriter(str(directory))

    def write(self, step: int, scalars: dict[str, float], walltime: float) -> None:
        values = [Summary.Value(tag=tag, simple_value=value) for tag, value in scalars.items()]
        self.writer.add_event(Event(wall_time=walltime, step=step, summary=Summary(value=values)))
        self.writer.flush()  # each point on disk as it comes: the run may be watched live

    def close(self) -> None:
        self.writer.close()


class WandbRun:
    """A run's Weights & Biases run, resumed under the run id when the scheduler opens it again."""

    def __init__(self, spec: WandbSpec, config: dict[str, Any], run_id: str, directory: Path):
        import wandb  # the optional `wandb` extra: loaded only for a run that asks for it

        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=spec.project,
            entity=spec.entity,
            mode=spec.mode,
            id=run_id,
            name=run_id,
            dir=str(directory),
            config=config,
            resume="allow",
            reinit="create_new",  # one W&B run per jetrl run, several at once in this process
            # the scheduler's own output and host stay its own: only the points are W&B's
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True, x_disable_meta=True),
        )
        self.run.define_metric("*", step_metric=STEP)

    def write(self, step: int, scalars: dict[str, float], walltime: float) -> None:
        self.run.log({STEP: step, **scalars})

    def close(self) -> None:
        self.run.finish()


class RunMetrics:
    """The open destinations of each run, kept until the run ends."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self._sinks: dict[str, list[Sink]] = {}
        self._lock = threading.Lock()  # writes go to threads: a version's and an evaluation's may overlap

    async def on_version(self, run_id: str, spec: RunSpec, version: int, points: list[VersionPoint]) -> None:
        """Write the version's scalars, from lineage's points of it and of the version before (for
        samples/s), which the recorder reads once for this and for the collapse warning."""
        if not (spec.metrics.tensorboard or spec.metrics.wandb):
            return
        if (point := next((p for p in points if p.version == version), None)) is not None:
            scalars = version_scalars(points, version)
            await asyncio.to_thread(self._write, run_id, spec, version, scalars, point.created_at.timestamp())

    async def on_evaluation(self, run_id: str, spec: RunSpec, version: int, accuracy: float) -> None:
        """Write a held-out accuracy at the version evaluated."""
        if spec.metrics.tensorboard or spec.metrics.wandb:
            await asyncio.to_thread(self._write, run_id, spec, version, {Tag.ACCURACY: accuracy}, time.time())

    def _write(self, run_id: str, spec: RunSpec, step: int, scalars: dict[str, float], walltime: float) -> None:
        with self._lock:
            if (sinks := self._sinks.get(run_id)) is None:
                sinks = self._sinks[run_id] = self._open(run_id, spec)
            for sink in sinks:
                try:
                    sink.write(step, scalars, walltime)
                except OSError as exc:
                    log.warning("cannot write metrics; the run goes on", extra=log_fields(run=run_id, error=repr(exc)))

    def _open(self, run_id: str, spec: RunSpec) -> list[Sink]:
        """The run's destinations; one that fails to open is logged once and left out."""
        wanted: list[tuple[str, Callable[[], Sink]]] = []
        if spec.metrics.tensorboard:
            wanted.append(("tensorboard", lambda: EventFile(self.data_dir / TENSORBOARD_DIR / run_id)))
        if (wandb := spec.metrics.wandb) is not None:
            config = spec.model_dump(mode="json")
            wanted.append(("wandb", lambda: WandbRun(wandb, config, run_id, self.data_dir / WANDB_DIR)))
        sinks: list[Sink] = []
        for name, open_sink in wanted:
            try:
                sinks.append(open_sink())
            # whatever stops a destination (no directory, wandb missing or refusing) must not stop the run
            except Exception as exc:
                log.warning(
                    "cannot open a metrics destination; the run goes on without it",
                    extra=log_fields(run=run_id, destination=name, error=repr(exc)[:300]),
                )
        return sinks

    def close(self, run_id: str) -> None:
        """The run ended: close its destinations (a late point opens them again)."""
        with self._lock:
            sinks = self._sinks.pop(run_id, [])
        for sink in sinks:
            sink.close()

    def close_all(self) -> None:
        for run_id in list(self._sinks):
            self.close(run_id)
