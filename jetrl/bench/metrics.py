"""The arithmetic of `jetrl bench async`: the ideal bound, the steady-state window, and the run
metrics read back from lineage.

Throughput is measured over a steady-state window, not the whole run: from the announcement of
version `warmup` to the announcement of the last version. The first versions pay for start-up
(model load, empty pipeline) that every configuration pays alike and that a long run amortises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from sqlalchemy import create_engine, func, select

from jetrl.lineage.models import Evaluation, PolicyVersion, PromptGroup, Run, Sample, SampleSegment
from jetrl.spec_sections import SimulationSpec
from jetrl.states import GroupState

__all__ = [
    "Ideal",
    "Window",
    "RunMetrics",
    "expected_length",
    "ideal_bound",
    "steady_window",
    "read_run_metrics",
    "time_to_target",
    "read_accuracy_curve",
]


def expected_length(median: float, sigma: float, max_length: int) -> float:
    """E[min(max(1, round(L)), max_length)] for L ~ lognormal(ln median, sigma): the mean
    completion length the simulated engine produces (svc_rollout/simulated.py draws exactly this).

    With F the lognormal CDF and lower(k) = P(clamped length < k) (0 for k = 1, else F(k - 1/2)):
        P(length = k) = lower(k + 1) - lower(k)   for 1 <= k < max_length
        P(length = max_length) = 1 - lower(max_length)   (the cap takes the whole tail)
    """
    if sigma == 0.0:
        return float(min(max(1, round(median)), max_length))
    mu, normal = math.log(median), NormalDist()

    def lower(k: int) -> float:
        return 0.0 if k <= 1 else normal.cdf((math.log(k - 0.5) - mu) / sigma)

    mean = sum(k * (lower(k + 1) - lower(k)) for k in range(1, max_length))
    return mean + max_length * (1.0 - lower(max_length))


@dataclass(frozen=True)
class Ideal:
    """Perfect overlap and a generator that is never idle: throughput is capped by the slower of
    the generator at full capacity and the trainer on batches of the expected size."""

    tokens_per_batch: float  # B·G·E[length]
    generator_tps: float  # capacity / decode_step_s
    trainer_tps: float  # tokens_per_batch / (train_s_per_step + train_s_per_token · tokens_per_batch)

    @property
    def bound(self) -> float:
        return min(self.generator_tps, self.trainer_tps)

    @property
    def limited_by(self) -> str:
        return "generator" if self.generator_tps < self.trainer_tps else "trainer"


def ideal_bound(sim: SimulationSpec, batch_groups: int, group_size: int) -> Ideal:
    """The ideal bound (tokens/s) of a simulated run: see `Ideal`."""
    tokens = batch_groups * group_size * expected_length(sim.length_median, sim.length_sigma, sim.max_length)
    step_s = sim.train_s_per_step + sim.train_s_per_token * tokens
    return Ideal(tokens, sim.capacity / sim.decode_step_s, tokens / step_s if step_s > 0 else math.inf)


@dataclass(frozen=True)
class Window:
    """The steady-state window: versions (warmup, last] trained `tokens` in `seconds`."""

    first_version: int
    last_version: int
    seconds: float
    tokens: int

    @property
    def throughput(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else math.nan


def steady_window(rows: list[tuple[int, float, int]], warmup: int) -> Window:
    """The window from `rows` of (version, announced at [s], tokens that version trained on):
    from the announcement of version `warmup` to that of the last one, counting the tokens of the
    versions after `warmup` (the batches trained inside the window)."""
    by_version = {v: (t, tokens) for v, t, tokens in rows}
    if warmup not in by_version:
        raise ValueError(f"version {warmup} (the warm-up) was never announced")
    last = max(by_version)
    if last <= warmup:
        raise ValueError(f"the run ended at version {last}: it needs more steps than the warm-up ({warmup})")
    tokens = sum(tok for v, (_, tok) in by_version.items() if warmup < v <= last)
    return Window(warmup, last, by_version[last][0] - by_version[warmup][0], tokens)


@dataclass
class RunMetrics:
    """What lineage says about one run."""

    window: Window
    mean_staleness: float
    max_staleness: int
    stale_masked_tokens: int
    offpolicy_tokens: int
    recycled: int  # aborts (APRIL): sum over groups of times each was aborted and resumed
    groups_recycled: int  # groups aborted at least once
    aborted_tokens: int  # generated in attempts that were aborted (APRIL's spare work), dropped prefixes included
    recycled_trained_tokens: int  # of those, trained: recycled tokens (prefix_len) less their stale-masked ones

    @property
    def aborted_trained_share(self) -> float | None:
        """The share of aborted work finally trained (the rest is wasted); None when nothing was aborted."""
        return self.recycled_trained_tokens / self.aborted_tokens if self.aborted_tokens else None


def read_run_metrics(database_url: str, run_id: str, warmup: int) -> RunMetrics:
    """Window and staleness figures of `run_id` from the lineage tables."""
    engine = create_engine(database_url)
    trained = (Sample.run_id == run_id, Sample.trained_version.is_not(None))
    try:
        with engine.connect() as conn:
            started = conn.execute(select(Run.created_at).where(Run.run_id == run_id)).scalar_one()
            announced = conn.execute(
                select(PolicyVersion.version, PolicyVersion.created_at).where(PolicyVersion.run_id == run_id)
            ).all()
            per_version = dict(
                conn.execute(
                    select(Sample.trained_version, func.sum(Sample.trained_tokens))
                    .where(*trained)
                    .group_by(Sample.trained_version)
                ).all()
            )
            mean_s, max_s, masked, offpolicy = conn.execute(
                select(
                    func.avg(Sample.staleness),
                    func.max(Sample.staleness),
                    func.sum(Sample.stale_masked_tokens),
                    func.sum(Sample.offpolicy_tokens),
                ).where(*trained)
            ).one()
            recycled, groups = conn.execute(
                select(
                    func.coalesce(func.sum(PromptGroup.recycled), 0), func.count().filter(PromptGroup.recycled > 0)
                ).where(PromptGroup.run_id == run_id)
            ).one()
            # an attempt was aborted when its group went on to a later one, or sits in the buffer:
            # its handed-back prefixes and the samples it finished before the abort
            aborted = conn.execute(
                select(func.coalesce(func.sum(SampleSegment.end - SampleSegment.start), 0))
                .join(PromptGroup, PromptGroup.group_id == SampleSegment.group_id)
                .where(
                    SampleSegment.run_id == run_id,
                    (SampleSegment.attempt < PromptGroup.attempt) | (PromptGroup.state == GroupState.PARTIAL),
                )
            ).scalar_one()
            # a recycled prefix holds a sample's oldest tokens, so the ones the bound masked are its own
            recycled_trained = conn.execute(
                select(
                    func.coalesce(func.sum(func.greatest(Sample.prefix_len - Sample.stale_masked_tokens, 0)), 0)
                ).where(*trained)
            ).scalar_one()
    finally:
        engine.dispose()
    # version 0 is the starting checkpoint: never announced, it exists from the run's creation
    rows = [(0, started.timestamp(), 0)] + [
        (v, t.timestamp(), int(per_version.get(v) or 0)) for v, t in announced if v > 0
    ]
    return RunMetrics(
        steady_window(rows, warmup),
        float(mean_s or 0.0),
        int(max_s or 0),
        int(masked or 0),
        int(offpolicy or 0),
        int(recycled),
        int(groups),
        int(aborted),
        int(recycled_trained),
    )


def time_to_target(curve: list[tuple[int, float, float]], target: float) -> tuple[int, float] | None:
    """(version, seconds from the run's start) of the first version whose held-out accuracy
    reaches `target`, from `curve` rows of (version, its announcement [s after start], accuracy);
    None if none does. The version's announcement, not its evaluation, is when the run got there."""
    return next(((v, seconds) for v, seconds, accuracy in sorted(curve) if accuracy >= target), None)


def read_accuracy_curve(database_url: str, run_id: str) -> list[tuple[int, float, float]]:
    """(version, seconds after the run's creation it was announced, held-out accuracy) of every
    evaluated version; version 0 is at 0 s."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            started = conn.execute(select(Run.created_at).where(Run.run_id == run_id)).scalar_one()
            rows = conn.execute(
                select(Evaluation.version, PolicyVersion.created_at, Evaluation.correct, Evaluation.total)
                .outerjoin(
                    PolicyVersion,
                    (PolicyVersion.run_id == Evaluation.run_id) & (PolicyVersion.version == Evaluation.version),
                )
                .where(Evaluation.run_id == run_id)
                .order_by(Evaluation.version)
            ).all()
    finally:
        engine.dispose()
    return [
        (v, 0.0 if v == 0 else at.timestamp() - started.timestamp(), correct / max(total, 1))
        for v, at, correct, total in rows
        if v == 0 or at is not None
    ]
