"""Reports: what a person or a test reads back about a run: held-out evaluations, dead letters,
run statistics (the progress numbers), each version's curves (`jetrl report`), one sample's whole
story (`jetrl explain`), each sample's segments and the trained samples.

The scheduler's writes and the queries its decisions rest on are the other roles of
`LineageStore` (`jetrl.lineage.store`); every method here is one read or one idempotent insert.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select, true

from jetrl.lineage.models import (
    Batch,
    DeadLetter,
    Evaluation,
    PolicyVersion,
    Prompt,
    PromptGroup,
    Reward,
    Run,
    Sample,
    SampleSegment,
)
from jetrl.lineage.role import EngineRole
from jetrl.states import SCORED_KEPT
from jetrl.views import TEACHER

__all__ = ["Reports", "RunStats", "VersionPoint", "version_points_statement"]


@dataclass(frozen=True)
class RunStats:
    """A run's numbers as progress shows them."""

    samples_generated: int
    samples_trained: int
    dead_letters: int
    mean_reward_last_batch: float | None
    first_sample_at: datetime | None
    last_sample_at: datetime | None
    mean_staleness: float
    max_staleness: int
    offpolicy_token_share: float
    stale_masked_tokens: int
    reward_failures: int  # groups some reward endpoint failed for
    last_reward_error: str | None  # the newest of them, `endpoint: error`
    teacher_version: int | None
    logprob_gap_mean: float | None  # |behaviour - trainer| log-prob on fresh tokens, mean of the versions'
    logprob_gap_max: float | None  # and the largest of any version


@dataclass(frozen=True)
class VersionPoint:
    """One trained version as `jetrl report` plots it."""

    version: int
    created_at: datetime
    samples_trained_total: int
    metrics: dict[str, float]  # what the trainer recorded with it: loss, kl, lr, clip_fraction, ...
    mean_reward: float | None  # of the samples that trained it (teacher views have none)
    mean_staleness: float | None
    max_staleness: int | None
    top_answer_share: float | None = None  # of its trained samples, the most common extracted answer's


class Reports(EngineRole):
    async def record_evaluation(self, run_id: str, version: int, correct: int, total: int) -> None:
        await self.insert_once(Evaluation, run_id=run_id, version=version, correct=correct, total=total)

    async def evaluations(self, run_id: str) -> list[tuple[int, int, int, float]]:
        """(version, correct, total, accuracy) in version order."""
        async with self.connect() as conn:
            rows = await conn.execute(
                select(Evaluation.version, Evaluation.correct, Evaluation.total)
                .where(Evaluation.run_id == run_id)
                .order_by(Evaluation.version)
            )
            return [(v, c, t, c / t if t else 0.0) for v, c, t in rows]

    async def latest_evaluation(self, run_id: str) -> tuple[int, float] | None:
        """(version, accuracy) of the newest evaluated version."""
        found = await self.evaluations(run_id)
        return (found[-1][0], found[-1][3]) if found else None

    async def record_dead_letter(self, dlq_id: str, run_id: str, subject: str, reason: str, payload: bytes) -> None:
        await self.insert_once(
            DeadLetter, dlq_id=dlq_id, run_id=run_id, subject=subject, reason=reason, payload=payload
        )

    async def dead_letters(self, run_id: str) -> list:
        return await self.rows(select(DeadLetter).where(DeadLetter.run_id == run_id).order_by(DeadLetter.created_at))

    async def run_stats(self, run_id: str) -> RunStats:
        async with self.connect() as conn:
            generated, trained, first, last = (
                await conn.execute(
                    select(
                        func.count(),
                        func.count(Sample.trained_version),
                        func.min(Sample.created_at),
                        func.max(Sample.created_at),
                    ).where(Sample.run_id == run_id)
                )
            ).one()
            dead = (await conn.execute(select(func.count()).where(DeadLetter.run_id == run_id))).scalar_one()
            last_batch = (
                select(Batch.batch_id)
                .where(Batch.run_id == run_id)
                .order_by(Batch.step.desc())
                .limit(1)
                .scalar_subquery()
            )
            mean = (
                await conn.execute(
                    select(func.avg(Sample.reward)).where(Sample.batch_id == last_batch, Sample.view != TEACHER)
                )
            ).scalar()
            failed = (PromptGroup.run_id == run_id, PromptGroup.reward_error.is_not(None))
            failures = (await conn.execute(select(func.count()).where(*failed))).scalar_one()
            last_error = (
                await conn.execute(
                    select(PromptGroup.reward_error).where(*failed).order_by(PromptGroup.n.desc()).limit(1)
                )
            ).scalar()
            teacher = (await conn.execute(select(Run.teacher_version).where(Run.run_id == run_id))).scalar()
            gap_mean, gap_max = (
                await conn.execute(
                    select(
                        func.avg(PolicyVersion.metrics["logprob_gap_mean"].as_float()),
                        func.max(PolicyVersion.metrics["logprob_gap_max"].as_float()),
                    ).where(PolicyVersion.run_id == run_id)
                )
            ).one()
            stale_mean, stale_max, tokens, offpolicy, masked = (
                await conn.execute(
                    select(
                        func.avg(Sample.staleness),
                        func.max(Sample.staleness),
                        func.sum(Sample.trained_tokens),
                        func.sum(Sample.offpolicy_tokens),
                        func.sum(Sample.stale_masked_tokens),
                    ).where(Sample.run_id == run_id, Sample.trained_version.is_not(None))
                )
            ).one()
        return RunStats(
            generated,
            trained,
            dead,
            float(mean) if mean is not None else None,
            first,
            last,
            float(stale_mean or 0.0),
            int(stale_max or 0),
            float(offpolicy or 0) / tokens if tokens else 0.0,
            int(masked or 0),
            failures,
            last_error,
            teacher,
            gap_mean,
            gap_max,
        )

    async def reward_failure_share(self, run_id: str) -> tuple[int, int]:
        """(groups some reward endpoint failed for, groups) among the run's scored groups kept for
        training; the share `reward.max_failed_share` bounds."""
        async with self.connect() as conn:
            failed, kept = (
                await conn.execute(
                    select(func.count().filter(PromptGroup.reward_error.is_not(None)), func.count()).where(
                        PromptGroup.run_id == run_id, PromptGroup.state.in_(SCORED_KEPT)
                    )
                )
            ).one()
        return failed, kept

    async def segments(self, sample_id: str) -> list:
        """Every attempt's stretch of one sample: worker, token range, versions, how it ended."""
        return await self.rows(
            select(SampleSegment).where(SampleSegment.sample_id == sample_id).order_by(SampleSegment.attempt)
        )

    async def trained_sample_rows(self, run_id: str) -> list:
        """Every trained sample: id, generating versions, reward, advantage, trained version."""
        return await self.rows(
            select(
                Sample.sample_id,
                Sample.min_version,
                Sample.max_version,
                Sample.reward,
                Sample.advantage,
                Sample.trained_version,
                Sample.batch_id,
                Sample.staleness,
                Sample.trained_tokens,
                Sample.stale_masked_tokens,
                Sample.attempts,
            )
            .where(Sample.run_id == run_id, Sample.trained_version.is_not(None))
            .order_by(Sample.sample_id)
        )

    async def version_points(self, run_id: str, since: int = 0) -> list[VersionPoint]:
        """The versions from `since` on the trainer published, in order, with the samples that
        trained each summed up: mean reward and staleness, and the share of the most common answer
        among all of them (one reward row per sample; collapse onto one answer shows as a share
        near 1; a version whose samples gave no answer at all has none)."""
        rows = await self.rows(version_points_statement(run_id, since))
        return [
            VersionPoint(
                r.version,
                r.created_at,
                r.samples_trained_total,
                {k: float(v) for k, v in r.metrics.items()},
                None if r.reward is None else float(r.reward),
                None if r.stale_mean is None else float(r.stale_mean),
                r.stale_max,
                None if r.top is None else float(r.top),
            )
            for r in rows
        ]

    async def sample_story(self, sample_id: str):
        """One sample's row with its group's state and reward server, its prompt and reference,
        and the step of the batch that trained it; None for an unknown id."""
        rows = await self.rows(
            select(
                Sample,
                PromptGroup.state.label("group_state"),
                PromptGroup.reward_server,
                Prompt.prompt,
                Prompt.reference,
                Batch.step.label("batch_step"),
            )
            .join(PromptGroup, PromptGroup.group_id == Sample.group_id)
            .outerjoin(Prompt, (Prompt.run_id == Sample.run_id) & (Prompt.prompt_id == PromptGroup.prompt_id))
            .outerjoin(Batch, Batch.batch_id == Sample.batch_id)
            .where(Sample.sample_id == sample_id)
        )
        return rows[0] if rows else None

    async def sample_rewards(self, sample_id: str) -> list:
        """How each reward server scored one sample: server, endpoint, reward, extracted answer, detail."""
        return await self.rows(select(Reward).where(Reward.sample_id == sample_id).order_by(Reward.server))


def version_points_statement(run_id: str, since: int) -> Select:
    """The query behind `Reports.version_points`: one row per version from `since` on."""
    of_run = (Sample.run_id == run_id, Sample.trained_version >= since)
    trained = (
        select(
            Sample.trained_version,
            func.avg(Sample.reward).filter(Sample.view != TEACHER).label("reward"),
            func.avg(Sample.staleness).label("stale_mean"),
            func.max(Sample.staleness).label("stale_max"),
        )
        .where(*of_run)
        .group_by(Sample.trained_version)
        .subquery()
    )
    # one reward row per sample, the first server's, looked up by the rewards' primary key: a
    # join the planner may answer by reading every reward row of the database (every run's),
    # on every version and on every progress update of every run
    first = (
        select(Reward.extracted_answer)
        .where(Reward.sample_id == Sample.sample_id)
        .order_by(Reward.server)
        .limit(1)
        .lateral()
    )
    answer = (
        select(Sample.trained_version, first.c.extracted_answer)
        .join(first, true())
        .where(*of_run, Sample.view != TEACHER)
        .subquery()
    )
    counts = (
        select(answer.c.trained_version, answer.c.extracted_answer, func.count().label("n"))
        .group_by(answer.c.trained_version, answer.c.extracted_answer)
        .subquery()
    )
    # "no answer" is no one answer: it counts among the samples, never as the top answer
    top = func.max(counts.c.n).filter(counts.c.extracted_answer != "")
    shares = (
        select(counts.c.trained_version, (top * 1.0 / func.sum(counts.c.n)).label("top"))
        .group_by(counts.c.trained_version)
        .subquery()
    )
    return (
        select(PolicyVersion, trained.c.reward, trained.c.stale_mean, trained.c.stale_max, shares.c.top)
        .outerjoin(trained, trained.c.trained_version == PolicyVersion.version)
        .outerjoin(shares, shares.c.trained_version == PolicyVersion.version)
        .where(PolicyVersion.run_id == run_id, PolicyVersion.version >= since)
        .order_by(PolicyVersion.version)
    )
