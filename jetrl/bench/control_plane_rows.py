"""The figures of one `jetrl bench control-plane` run: its versions' timestamps read back from
lineage, and the arithmetic that turns them (with the run's CPU seconds and the raw JetStream
rates) into one result row.

The timestamps are those jetrl/bench/control_plane.py's docstring names; all are Postgres now()
at the start of the recorder's transaction, so a transaction that waited for a row lock dates
its rows by when it began waiting, a little early.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import create_engine, func, select

from jetrl.bench.control_plane_raw import RawRates
from jetrl.bench.metrics import Window, steady_window
from jetrl.bench.stack import RunRecord
from jetrl.lineage.models import Batch, PolicyVersion, PromptGroup, Reward, Run, Sample

__all__ = ["VersionTimes", "read_versions", "quantile", "ms", "sample_window", "overheads", "per_1k", "result_row"]

STACK = "stack (jetrl + nats)"  # the CPU total of the processes the bench started (Postgres is not one)


@dataclass(frozen=True)
class VersionTimes:
    """One version as lineage dates it (seconds since the epoch)."""

    version: int
    announced: float  # PolicyVersion.created_at; version 0 (never announced): Run.created_at
    samples: int  # samples trained into it
    last_sample: float | None = None  # newest Sample.created_at of those
    sealed: float | None = None  # Batch.created_at of the batch that made it
    admitted: float | None = None  # newest PromptGroup.created_at of that batch's groups
    admitted_version: int | None = None  # the newest PromptGroup.admitted_version among them
    scored: float | None = None  # newest Reward.created_at of the samples trained into it


def read_versions(database_url: str, run_id: str) -> list[VersionTimes]:
    """Every version of `run_id` with its timestamps and trained samples, version 0 first."""
    engine = create_engine(database_url)
    # one pass over the run's trained samples; a sample scored by several reward servers has a
    # reward row for each, hence the distinct count
    trained = (
        select(
            Sample.trained_version.label("version"),
            func.count(Sample.sample_id.distinct()).label("n"),
            func.max(Sample.created_at).label("at"),
            func.max(Reward.created_at).label("scored"),
        )
        .outerjoin(Reward, Reward.sample_id == Sample.sample_id)
        .where(Sample.run_id == run_id, Sample.trained_version.is_not(None))
        .group_by(Sample.trained_version)
        .subquery()
    )
    admitted = (
        select(
            PromptGroup.batch_id,
            func.max(PromptGroup.created_at).label("at"),
            func.max(PromptGroup.admitted_version).label("by"),
        )
        .where(PromptGroup.run_id == run_id, PromptGroup.batch_id.is_not(None))
        .group_by(PromptGroup.batch_id)
        .subquery()
    )
    try:
        with engine.connect() as conn:
            started = conn.execute(select(Run.created_at).where(Run.run_id == run_id)).scalar_one()
            rows = conn.execute(
                select(
                    PolicyVersion.version,
                    PolicyVersion.created_at,
                    Batch.created_at,
                    trained.c.n,
                    trained.c.at,
                    admitted.c.at,
                    admitted.c.by,
                    trained.c.scored,
                )
                .outerjoin(Batch, Batch.batch_id == PolicyVersion.batch_id)
                .outerjoin(trained, trained.c.version == PolicyVersion.version)
                .outerjoin(admitted, admitted.c.batch_id == PolicyVersion.batch_id)
                .where(PolicyVersion.run_id == run_id, PolicyVersion.version > 0)
                .order_by(PolicyVersion.version)
            ).all()
    finally:
        engine.dispose()
    return [VersionTimes(0, started.timestamp(), 0)] + [
        VersionTimes(v, at.timestamp(), int(n or 0), _seconds(last), _seconds(sealed), _seconds(adm), by, _seconds(rew))
        for v, at, sealed, n, last, adm, by, rew in rows
    ]


def _seconds(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


def sample_window(versions: list[VersionTimes], warmup: int) -> Window:
    """The steady-state window (jetrl/bench/metrics.py) counted in samples: its `tokens` are the
    samples trained into versions (warmup, last]."""
    return steady_window([(v.version, v.announced, v.samples) for v in versions], warmup)


def quantile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation between the closest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def overheads(versions: list[VersionTimes], warmup: int) -> dict[str, list[float]]:
    """Seconds per version after `warmup`: "total" (last sample recorded -> announced) and its two
    parts at the batch row, "to_seal" and "to_announce"; a version missing a timestamp is left out."""
    out: dict[str, list[float]] = {"total": [], "to_seal": [], "to_announce": []}
    for v in versions:
        if v.version <= warmup or v.last_sample is None:
            continue
        out["total"].append(v.announced - v.last_sample)
        if v.sealed is not None:
            out["to_seal"].append(v.sealed - v.last_sample)
            out["to_announce"].append(v.announced - v.sealed)
    return out


def per_1k(cpu: dict[str, float], samples: int) -> dict[str, float | None]:
    """CPU seconds per 1,000 samples of each process; None without samples."""
    return {name: (s * 1000 / samples if samples else None) for name, s in cpu.items()}


def ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds; None stays None."""
    return None if seconds is None else seconds * 1000


def result_row(
    workers: int,
    record: RunRecord,
    cpu: dict[str, float],
    versions: list[VersionTimes],
    warmup: int,
    raw: RawRates,
) -> dict:
    """One worker count's figures (None where not measurable); JSON row and table row alike.
    `cpu` gains the STACK total: every process but Postgres, which is the whole server."""
    samples = sum(v.samples for v in versions)
    cpu = cpu | {STACK: sum(s for name, s in cpu.items() if not name.startswith("postgres"))}
    row = {
        "workers": workers,
        "run_id": record.run_id,
        "state": record.state,
        "message": record.message,
        "wall_s": record.wall_s,
        "samples_trained": samples,
        "cpu_s": cpu,
        "cpu_s_per_1k": per_1k(cpu, samples),
        "stack_cpu_s_per_1k": per_1k(cpu, samples)[STACK],
    }
    if record.state != "COMPLETED":
        return row
    window = sample_window(versions, warmup)
    parts = overheads(versions, warmup)
    rate = window.throughput
    row.update(
        window_versions=[window.first_version, window.last_version],
        window_s=window.seconds,
        window_samples=window.tokens,
        samples_per_s=rate,
        overhead_p50_ms=ms(quantile(parts["total"], 0.5)),
        overhead_p90_ms=ms(quantile(parts["total"], 0.9)),
        to_seal_p50_ms=ms(quantile(parts["to_seal"], 0.5)),
        to_announce_p50_ms=ms(quantile(parts["to_announce"], 0.5)),
        of_raw_publish=rate / raw.publish_rate,
        of_raw_consume=rate / raw.consume_rate,
    )
    return row
