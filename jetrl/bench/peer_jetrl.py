"""The jetrl arms of `jetrl bench peer`: the demo's run on the real services of a private stack,
one run per seed and η, as `jetrl bench async --real` runs it; and the figures each one leaves.

A run's wall time is lineage's: from the run's row (Run.created_at, CreateRun) to the
announcement of its last version (PolicyVersion.created_at), both Postgres now(). Its held-out
curve is the rollout worker's evaluations (jetrl/bench/metrics.py read_accuracy_curve), which run
beside training. Where the wall time went, per version v (control_plane_rows.read_versions):

    waiting    max(0, batch v sealed - version v-1 announced): the trainer had nothing to train,
               the rollout, reward and lineage path was filling batch v
    training   version v announced - max(batch v sealed, version v-1 announced): the batch was
               there; the trainer's step, writing the version and announcing it

The two add up to the wall time. The path of batch v, per version (p50 of each hop; at η = 0 the
hops follow one another and add up to `waiting`, at η > 0 they overlap earlier versions):

    admission  its newest group admitted - the version that group was admitted at announced
    generation → the newest sample it trained recorded (tasks out, generated, rollouts recorded)
    reward     → the newest reward of those samples recorded (groups out, scored, recorded)
    sealing    → batch v sealed

CPU seconds: every stack process and the whole Postgres server
between snapshots before and after the run (control_plane_procs); peak memory: each stack
process's VmHWM, reset before the run (peer_procs). A short unmeasured run comes first on the
stack (`warm_up`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jetrl.bench.control_plane_procs import POSTGRES, cpu_delta, cpu_snapshot
from jetrl.bench.control_plane_rows import VersionTimes, ms, quantile, read_versions
from jetrl.bench.metrics import read_accuracy_curve, time_to_target
from jetrl.bench.peer_procs import reset_peaks, stack_peaks
from jetrl.bench.stack import RunRecord, follow_all
from jetrl.config import RunSpec, Settings

__all__ = ["peer_spec", "time_split", "batch_path", "arm_row", "jetrl_row", "warm_up", "run_jetrl_arm"]

WARM_UP_STEPS = 2


def peer_spec(base: RunSpec, model_dir: Path, seed: int, eta: int, steps: int | None) -> RunSpec:
    """The demo spec with this seed and staleness bound (and `steps` versions when given); evaluated
    as the demo is (eval_every), so both arms' curves have the same points."""
    raw = base.model_dump()
    raw["name"] = f"peer-eta{eta}-s{seed}"
    raw["seed"] = seed
    raw["model"]["path"] = str(model_dir)
    raw["schedule"]["max_staleness"] = eta
    if steps:
        raw["train"]["steps"] = steps
    return RunSpec.model_validate(raw)


def time_split(versions: list[VersionTimes]) -> dict[str, Any]:
    """Seconds the trainer waited for batches and spent on them (module docstring), in total and
    the median per version; versions without a batch timestamp count as training only."""
    waiting, training = [], []
    for before, v in zip(versions, versions[1:]):
        ready = before.announced if v.sealed is None else max(v.sealed, before.announced)
        waiting.append(ready - before.announced)
        training.append(v.announced - ready)
    return {
        "waiting_s": sum(waiting),
        "training_s": sum(training),
        "waiting_p50_ms": ms(quantile(waiting, 0.5)),
        "training_p50_ms": ms(quantile(training, 0.5)),
    }


def batch_path(versions: list[VersionTimes]) -> dict[str, float | None]:
    """The median of each hop of a batch's path (module docstring) in ms; a version missing one of
    a hop's two timestamps is left out of that hop."""
    announced = {v.version: v.announced for v in versions}
    hops: dict[str, list[float]] = {"admission": [], "generation": [], "reward": [], "sealing": []}
    for v in versions:
        start = None if v.admitted_version is None else announced.get(v.admitted_version)
        stamps = [start, v.admitted, v.last_sample, v.scored, v.sealed]
        for hop, begin, end in zip(hops, stamps, stamps[1:]):
            if begin is not None and end is not None:
                hops[hop].append(end - begin)
    return {f"{hop}_p50_ms": ms(quantile(seconds, 0.5)) for hop, seconds in hops.items()}


def arm_row(
    arm: str,
    seed: int,
    eta: int | None,
    state: str,
    wall_s: float | None,
    curve: list[tuple[int, float, float]],
    target: float,
    first_step_s: float | None = None,
) -> dict[str, Any]:
    """What every arm's row holds: its wall time (and how much of it the first step took: one-time
    costs show there), curve, when it first reached `target`, where it ended."""
    version_at, reached = time_to_target(curve, target) or (None, None)
    return {
        "arm": arm,
        "seed": seed,
        "max_staleness": eta,
        "state": state,
        "wall_s": wall_s,
        "first_step_s": first_step_s,
        "later_steps_s": None if wall_s is None or first_step_s is None else wall_s - first_step_s,
        "time_to_target_s": reached,
        "version_at_target": version_at,
        "final_version": curve[-1][0] if curve else None,
        "final_accuracy": curve[-1][2] if curve else None,
        "curve": [{"version": v, "seconds": s, "accuracy": a} for v, s, a in curve],
    }


def jetrl_row(
    seed: int,
    eta: int,
    record: RunRecord,
    versions: list[VersionTimes],
    curve: list[tuple[int, float, float]],
    cpu: dict[str, float],
    peaks: dict[str, float],
    peaks_reset: bool,
    target: float,
) -> dict[str, Any]:
    """One jetrl run's row: lineage's wall time and time split, CPU (Postgres included) and peak
    memory (Postgres not) of its processes."""
    wall = versions[-1].announced - versions[0].announced if len(versions) > 1 else None
    first = versions[1].announced - versions[0].announced if len(versions) > 1 else None
    row = arm_row(f"jetrl η={eta}", seed, eta, record.state, wall, curve, target, first)
    row.update(
        run_id=record.run_id,
        message=record.message,
        versions_made=versions[-1].version if versions else 0,
        cpu_s=sum(cpu.values()),
        cpu_by_process=cpu,
        cpu_without_postgres_s=sum(s for name, s in cpu.items() if name != POSTGRES),
        peak_rss_mb=sum(peaks.values()) if peaks else None,
        peak_rss_by_process=peaks,
        peaks_reset=peaks_reset,
        **time_split(versions),
        **batch_path(versions),
    )
    return row


def warm_up(settings: Settings, spec: RunSpec, timeout: float) -> None:
    """A short unmeasured run first (WARM_UP_STEPS versions, no evaluation after version 0): what a
    fresh stack pays once (the trainer's and worker's first model load, imports, caches) is paid
    here, not by whichever arm runs first; TRL's start-up (GRPOTrainer's construction) is outside
    its wall time likewise."""
    raw = spec.model_dump()
    raw["name"] = "peer-warm-up"
    raw["train"]["steps"] = WARM_UP_STEPS
    raw["schedule"]["eval_every"] = 0
    follow_all(
        settings, "jetrl bench peer: warm-up (not measured)", [("warm-up", RunSpec.model_validate(raw))], timeout
    )


def run_jetrl_arm(settings: Settings, database_url: str, spec: RunSpec, eta: int, timeout: float, target: float):
    """Run `spec` on the stack of `settings` to its end and measure it: the arm's row."""
    pids = settings.data_dir.resolve() / "pids"
    peaks_reset = reset_peaks(pids)
    before = cpu_snapshot(pids)
    label = f"seed {spec.seed}, η={eta}"
    [record] = follow_all(settings, f"jetrl bench peer: jetrl, {label}", [(label, spec)], timeout)
    cpu = cpu_delta(before, cpu_snapshot(pids))
    peaks = stack_peaks(pids)
    versions = read_versions(database_url, record.run_id)
    curve = read_accuracy_curve(database_url, record.run_id)
    return jetrl_row(spec.seed, eta, record, versions, curve, cpu, peaks, peaks_reset, target)
