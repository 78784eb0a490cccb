"""LineageStore: every write of the lineage database and the queries the scheduler decides on.

Writes are idempotent (keyed inserts with ON CONFLICT DO NOTHING, and state updates that only
move forward), so the recorder may see any event twice. Each method is one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, bindparam, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert

from jetrl.ids import group_number
from jetrl.lineage.models import (
    Batch,
    PartialSample,
    PolicyVersion,
    Prompt,
    PromptGroup,
    Reward,
    Run,
    Sample,
    SampleSegment,
)
from jetrl.lineage.reports import LineageReports
from jetrl.states import IN_FLIGHT, FinishReason, GroupState, RunState
from jetrl.v1 import events_pb2, reward_pb2
from jetrl.views import ANALOGOUS, MAIN, TEACHER, split

__all__ = ["GroupProgress", "LineageStore", "UnknownGroup"]


class UnknownGroup(LookupError):
    """An event names a prompt group the scheduler never admitted."""


@dataclass(frozen=True)
class GroupProgress:
    """Where a group stands after a write of its samples."""

    complete: int  # samples finished (eos or length)
    state: str
    accounted: bool  # every sample is finished or reported by the current attempt (resumable)


def _sample_row(sample: events_pb2.Sample, trace_id: str) -> dict:
    versions = list(sample.token_versions) or [0]
    return dict(
        sample_id=sample.sample_id,
        run_id=sample.run_id,
        group_id=sample.group_id,
        index=sample.index,
        prompt_token_ids=list(sample.prompt_token_ids),
        completion_token_ids=list(sample.completion_token_ids),
        logprobs=list(sample.logprobs),
        token_versions=list(sample.token_versions),
        min_version=min(versions),
        max_version=max(versions),
        text=sample.text,
        finish_reason=sample.finish_reason,
        worker_id=sample.worker_id,
        trace_id=trace_id,
        view=sample.view or MAIN,
    )


def _partial_row(sample: events_pb2.Sample) -> dict:
    return dict(
        sample_id=sample.sample_id,
        attempt=sample.attempt,
        run_id=sample.run_id,
        group_id=sample.group_id,
        index=sample.index,
        token_ids=list(sample.completion_token_ids),
        logprobs=list(sample.logprobs),
        token_versions=list(sample.token_versions),
    )


def _segment_row(sample: events_pb2.Sample) -> dict:
    """This attempt's own stretch of the sample: the tokens after the prefix it was given."""
    own = list(sample.token_versions)[sample.prefix_len :]
    return dict(
        sample_id=sample.sample_id,
        attempt=sample.attempt,
        run_id=sample.run_id,
        group_id=sample.group_id,
        worker_id=sample.worker_id,
        start=sample.prefix_len,
        end=len(sample.completion_token_ids),
        min_version=min(own) if own else None,
        max_version=max(own) if own else None,
        finish_reason=sample.finish_reason,
    )


class LineageStore(LineageReports):
    """The scheduler's writes and the queries its decisions rest on; the reports a person reads
    (evaluations, dead letters, run statistics, per-sample rows) come from `LineageReports`."""

    # ---- runs --------------------------------------------------------------------------------

    async def create_run(
        self,
        run_id: str,
        name: str,
        spec_yaml: str,
        total_steps: int,
        batch_groups: int,
        group_size: int,
        trace_id: str,
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(Run)
                .values(
                    run_id=run_id,
                    name=name,
                    spec_yaml=spec_yaml,
                    state=RunState.RUNNING,
                    message="",
                    policy_version=0,
                    total_steps=total_steps,
                    batch_groups=batch_groups,
                    group_size=group_size,
                    trace_id=trace_id,
                )
                .on_conflict_do_nothing()
            )

    async def get_run(self, run_id: str) -> Run | None:
        async with self.engine.connect() as conn:
            # a Core connection returns the runs row's columns (what callers read), not a Run entity
            return (await conn.execute(select(Run).where(Run.run_id == run_id))).one_or_none()  # type: ignore[return-value]

    async def list_runs(self) -> list:
        async with self.engine.connect() as conn:
            return list(await conn.execute(select(Run).order_by(Run.created_at)))

    async def set_run_state(self, run_id: str, state: RunState, message: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(Run).where(Run.run_id == run_id).values(state=state, message=message, updated_at=func.now())
            )

    # ---- groups and samples ---------------------------------------------------------------------

    async def admit_group(
        self,
        task: events_pb2.Task,
        reference: str,
        traceparent: str,
        trace_id: str,
        analogous: str | None = None,
        problem: int | None = None,
    ) -> None:
        """A new group from its main-view task; `analogous` is the rephrased prompt when that view
        is sampled, `problem` the task's problem index when the scheduler chose it (not n)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(Prompt)
                .values(
                    run_id=task.run_id,
                    prompt_id=task.prompt_id,
                    prompt=task.prompt,
                    reference=reference,
                    analogous=analogous,
                )
                .on_conflict_do_nothing()
            )
            await conn.execute(
                insert(PromptGroup)
                .values(
                    group_id=task.group_id,
                    run_id=task.run_id,
                    n=group_number(task.group_id),
                    problem=problem,
                    prompt_id=task.prompt_id,
                    admitted_version=task.policy_version,
                    attempt_version=task.policy_version,
                    state=GroupState.ADMITTED,
                    view=task.view or "main",
                    traceparent=traceparent,
                    trace_id=trace_id,
                )
                .on_conflict_do_nothing()
            )

    async def group_counts(self, run_id: str) -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(PromptGroup.state, func.count()).where(PromptGroup.run_id == run_id).group_by(PromptGroup.state)
            )
            return {state: 0 for state in GroupState} | dict(rows.all())

    async def admitted_groups(self, run_id: str) -> list[tuple[int, int, int, str]]:
        """(n, attempt, version it started on, traceparent) of groups generating now, in admission order."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(PromptGroup.n, PromptGroup.attempt, PromptGroup.attempt_version, PromptGroup.traceparent)
                .where(PromptGroup.run_id == run_id, PromptGroup.state == GroupState.ADMITTED)
                .order_by(PromptGroup.n)
            )
            return [(n, attempt, version, traceparent) for n, attempt, version, traceparent in rows]

    async def complete_groups(self, run_id: str, size: int) -> list[str]:
        """Groups still generating (or buffered) whose `size` samples are all recorded: their
        completion was decided but maybe never published (a crash right after the commit)."""
        finished = select(func.count()).where(Sample.group_id == PromptGroup.group_id).scalar_subquery()
        async with self.engine.connect() as conn:
            return list(
                (
                    await conn.execute(
                        select(PromptGroup.group_id)
                        .where(PromptGroup.run_id == run_id, PromptGroup.state.in_(IN_FLIGHT), finished >= size)
                        .order_by(PromptGroup.n)
                    )
                ).scalars()
            )

    async def group_state(self, group_id: str) -> str | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(PromptGroup.state).where(PromptGroup.group_id == group_id))).scalar()

    async def group_traceparent(self, group_id: str) -> str | None:
        async with self.engine.connect() as conn:
            return (
                await conn.execute(select(PromptGroup.traceparent).where(PromptGroup.group_id == group_id))
            ).scalar()

    async def mark_group(self, group_id: str, state: GroupState) -> None:
        """Move a group forward to `state`; a group already there or further stays put."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(PromptGroup)
                .where(PromptGroup.group_id == group_id, PromptGroup.state.in_(GroupState(state).earlier()))
                .values(state=state)
            )

    async def record_samples(
        self, samples: list[tuple[events_pb2.Sample, str]]
    ) -> dict[tuple[str, str], GroupProgress | None]:
        """Store (sample, trace id) pairs in one transaction: finished samples as samples, aborted
        ones in the partial buffer, every one as a segment. Returns, per (group id, run id) the
        samples name, the group's progress, or None when that run never admitted that group (such
        samples are not stored)."""
        pairs = sorted({(s.group_id, s.run_id) for s, _ in samples})
        async with self.engine.begin() as conn:
            # row locks, taken in one order: the samples of a group are serialised across
            # transactions, so exactly one of them sees the group complete
            known = {
                (g, r): (state, attempt)
                for g, r, state, attempt in await conn.execute(
                    select(PromptGroup.group_id, PromptGroup.run_id, PromptGroup.state, PromptGroup.attempt)
                    .where(tuple_(PromptGroup.group_id, PromptGroup.run_id).in_(pairs))
                    .order_by(PromptGroup.group_id)
                    .with_for_update()
                )
            }
            ours = [(s, t) for s, t in samples if (s.group_id, s.run_id) in known]
            if ours:
                await conn.execute(insert(SampleSegment).on_conflict_do_nothing(), [_segment_row(s) for s, _ in ours])
            finished = [_sample_row(s, t) for s, t in ours if s.finish_reason != FinishReason.ABORTED]
            if finished:
                await conn.execute(insert(Sample).on_conflict_do_nothing(), finished)
                ids = [r["sample_id"] for r in finished]
                await conn.execute(
                    update(Sample)
                    .where(Sample.sample_id.in_(ids))
                    .values(
                        attempts=select(func.count())
                        .where(SampleSegment.sample_id == Sample.sample_id)
                        .scalar_subquery(),
                        regenerated=select(func.count())
                        .where(
                            SampleSegment.sample_id == Sample.sample_id,
                            SampleSegment.finish_reason == FinishReason.DROPPED,
                        )
                        .scalar_subquery(),
                    )
                )
            partial = [_partial_row(s) for s, _ in ours if s.finish_reason == FinishReason.ABORTED]
            if partial:
                await conn.execute(insert(PartialSample).on_conflict_do_nothing(), partial)
            groups = [g for g, _ in known]
            complete = dict(
                (
                    await conn.execute(
                        select(Sample.group_id, func.count())
                        .where(Sample.group_id.in_(groups))
                        .group_by(Sample.group_id)
                    )
                ).all()
            )
            progress = {}
            for (g, r), (state, attempt) in known.items():
                progress[(g, r)] = GroupProgress(
                    complete.get(g, 0), state, state == GroupState.PARTIAL and await accounted(conn, g, attempt)
                )
        return {pair: progress.get(pair) for pair in pairs}

    async def load_group(self, group_id: str) -> events_pb2.PromptGroup:
        async with self.engine.connect() as conn:
            return await self._load_group(conn, group_id)

    async def _load_group(self, conn, group_id: str) -> events_pb2.PromptGroup:
        head = (
            await conn.execute(
                select(PromptGroup, Prompt.prompt, Prompt.reference, Prompt.analogous)
                .join(Prompt, and_(Prompt.run_id == PromptGroup.run_id, Prompt.prompt_id == PromptGroup.prompt_id))
                .where(PromptGroup.group_id == group_id)
            )
        ).one_or_none()
        if head is None:
            raise UnknownGroup(f"unknown group {group_id!r}")
        rows = list(await conn.execute(select(Sample).where(Sample.group_id == group_id).order_by(Sample.index)))
        views: list[events_pb2.ViewPrompt] = []
        for s in rows:  # the samples are in index order, so each view's are contiguous
            if not views or views[-1].view != s.view:
                views.append(
                    events_pb2.ViewPrompt(
                        view=s.view,
                        prompt=head.analogous if s.view == ANALOGOUS else head.prompt,
                        first_index=s.index,
                        trained=s.view != TEACHER,
                    )
                )
            views[-1].size += 1
        return events_pb2.PromptGroup(
            run_id=head.run_id,
            group_id=group_id,
            prompt_id=head.prompt_id,
            prompt=head.prompt,
            reference=head.reference,
            step=head.step if head.step is not None else -1,
            policy_version=head.admitted_version,
            samples=[
                events_pb2.Sample(
                    run_id=s.run_id,
                    group_id=group_id,
                    sample_id=s.sample_id,
                    index=s.index,
                    prompt_token_ids=s.prompt_token_ids,
                    completion_token_ids=s.completion_token_ids,
                    logprobs=s.logprobs,
                    token_versions=s.token_versions,
                    text=s.text,
                    finish_reason=s.finish_reason,
                    worker_id=s.worker_id,
                    view=s.view,
                )
                for s in rows
            ],
            views=views if [v.view for v in views] != [MAIN] else [],
        )

    # ---- rewards, batches, versions ----------------------------------------------------------

    async def record_scored(
        self, scored: events_pb2.ScoredGroup, trace_id: str, state: GroupState = GroupState.SCORED
    ) -> str:
        """Rewards of a group, the combined one per sample and each endpoint's own, and the state
        the scheduler decided for it (scored, or filtered or dropped: never trained); returns the
        group's state now (a redelivered event finds it already moved). Context-only samples (the
        teacher's) get no reward row."""
        group = scored.group
        trained = [i for view, idx in split(group) if view.trained for i in idx]
        failures = "; ".join(f"{c.endpoint}: {c.error}" for c in scored.calls if not c.ok) or None
        calls = [c for c in scored.calls if c.ok] or [
            events_pb2.RewardCall(endpoint=scored.reward_endpoint, server=scored.reward_server, rewards=scored.rewards)
        ]
        async with self.engine.begin() as conn:
            # the group's row first, then its samples: the order record_samples takes them in
            if (
                await conn.execute(
                    select(PromptGroup.state).where(PromptGroup.group_id == group.group_id).with_for_update()
                )
            ).scalar() is None:
                raise UnknownGroup(f"scored group {group.group_id!r} was never admitted")
            known = set(
                (await conn.execute(select(Sample.sample_id).where(Sample.group_id == group.group_id))).scalars()
            )
            for sample in group.samples:
                if sample.sample_id not in known:
                    raise UnknownGroup(f"scored sample {sample.sample_id!r} was never recorded")
            for i in trained:
                sample = group.samples[i]
                detail = scored.details[i] if i < len(scored.details) else reward_pb2.SampleScore()
                for call in calls:
                    await conn.execute(
                        insert(Reward)
                        .values(
                            sample_id=sample.sample_id,
                            server=call.server or "unknown",
                            endpoint=call.endpoint,
                            reward=call.rewards[i] if i < len(call.rewards) else scored.rewards[i],
                            extracted_answer=detail.extracted_answer,
                            detail=detail.detail,
                            trace_id=trace_id,
                        )
                        .on_conflict_do_nothing()
                    )
                await conn.execute(
                    update(Sample)
                    .where(Sample.sample_id == sample.sample_id, Sample.reward.is_(None))
                    .values(reward=scored.rewards[i])
                )
            moved = (
                await conn.execute(
                    update(PromptGroup)
                    .where(PromptGroup.group_id == group.group_id, PromptGroup.state.in_(GroupState.SCORED.earlier()))
                    .values(state=state, reward_server=scored.reward_server, reward_error=failures)
                    .returning(PromptGroup.state)
                )
            ).scalar()
            return (
                moved
                or (
                    await conn.execute(select(PromptGroup.state).where(PromptGroup.group_id == group.group_id))
                ).scalar_one()
            )

    async def seal_batch(self, run_id: str, step: int, size: int, batch_id: str, max_staleness: int) -> bool:
        """Make batch `step` of the `size` oldest scored groups, if there are that many and it does
        not exist yet; True when sealed now. The groups are chosen and marked in one transaction,
        so the batch is decided once, before it is published (a restart re-publishes the same).

        A scored group whose newest token is already older than `max_staleness` versions at this
        step could only be trained fully masked: it expires instead, and admission replaces it.
        """
        async with self.engine.begin() as conn:
            if (await conn.execute(select(Batch.batch_id).where(Batch.run_id == run_id, Batch.step == step))).first():
                return False
            too_old = (
                select(Sample.group_id)
                .where(Sample.run_id == run_id)
                .group_by(Sample.group_id)
                .having(func.max(Sample.max_version) < step - max_staleness)
            )
            await conn.execute(
                update(PromptGroup)
                .where(
                    PromptGroup.run_id == run_id,
                    PromptGroup.state == GroupState.SCORED,
                    PromptGroup.group_id.in_(too_old),
                )
                .values(state=GroupState.EXPIRED)
            )
            ids = (
                (
                    await conn.execute(
                        select(PromptGroup.group_id)
                        .where(PromptGroup.run_id == run_id, PromptGroup.state == GroupState.SCORED)
                        .order_by(PromptGroup.n)
                        .limit(size)
                        .with_for_update()
                    )
                )
                .scalars()
                .all()
            )
            if len(ids) < size:
                return False
            await conn.execute(
                insert(Batch).values(batch_id=batch_id, run_id=run_id, step=step, policy_version=step, trace_id="")
            )
            await conn.execute(
                update(PromptGroup)
                .where(PromptGroup.group_id.in_(ids))
                .values(state=GroupState.BATCHED, batch_id=batch_id, step=step)
            )
            await conn.execute(update(Sample).where(Sample.group_id.in_(ids)).values(batch_id=batch_id))
        return True

    async def set_batch_trace(self, batch_id: str, trace_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(Batch).where(Batch.batch_id == batch_id).values(trace_id=trace_id))

    async def batches_sealed(self, run_id: str) -> int:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(func.count()).where(Batch.run_id == run_id))).scalar_one()

    async def untrained_batches(self, run_id: str) -> list[str]:
        """Ids of sealed batches some group of which is not trained yet, in step order."""
        async with self.engine.connect() as conn:
            return list(
                (
                    await conn.execute(
                        select(Batch.batch_id)
                        .where(
                            Batch.run_id == run_id,
                            Batch.batch_id.in_(
                                select(PromptGroup.batch_id).where(
                                    PromptGroup.run_id == run_id, PromptGroup.state == GroupState.BATCHED
                                )
                            ),
                        )
                        .order_by(Batch.step)
                    )
                ).scalars()
            )

    async def load_batch(self, batch_id: str) -> events_pb2.Batch:
        """A sealed batch as the trainer gets it, groups in admission order."""
        async with self.engine.connect() as conn:
            head = (await conn.execute(select(Batch).where(Batch.batch_id == batch_id))).one()
            ids = (
                (
                    await conn.execute(
                        select(PromptGroup.group_id).where(PromptGroup.batch_id == batch_id).order_by(PromptGroup.n)
                    )
                )
                .scalars()
                .all()
            )
            return events_pb2.Batch(
                run_id=head.run_id,
                batch_id=batch_id,
                step=head.step,
                policy_version=head.policy_version,
                groups=[await self._load_scored(conn, g) for g in ids],
            )

    async def _load_scored(self, conn, group_id: str) -> events_pb2.ScoredGroup:
        group = await self._load_group(conn, group_id)
        # context-only samples (the teacher's) have no reward: 0 here, and the trainer skips them
        rewards = {
            sid: r or 0.0
            for sid, r in (
                await conn.execute(select(Sample.sample_id, Sample.reward).where(Sample.group_id == group_id))
            ).all()
        }
        scores = {
            r.sample_id: r
            for r in await conn.execute(
                select(Reward).join(Sample, Sample.sample_id == Reward.sample_id).where(Sample.group_id == group_id)
            )
        }
        return events_pb2.ScoredGroup(
            group=group,
            rewards=[rewards[s.sample_id] for s in group.samples],
            details=[
                reward_pb2.SampleScore(
                    sample_id=s.sample_id,
                    reward=rewards[s.sample_id],
                    extracted_answer=scores[s.sample_id].extracted_answer if s.sample_id in scores else "",
                    detail=scores[s.sample_id].detail if s.sample_id in scores else "",
                )
                for s in group.samples
            ],
            reward_server=next(iter(scores.values())).server if scores else "",
        )

    async def record_version(self, ann: events_pb2.WeightsAnnouncement, trace_id: str) -> None:
        """A new version: its row, each trained sample's advantage and trained version, the run's head."""
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(PolicyVersion)
                .values(
                    run_id=ann.run_id,
                    version=ann.version,
                    parent_version=ann.parent_version,
                    batch_id=ann.batch_id,
                    uri=ann.uri,
                    sha256=ann.sha256,
                    size_bytes=ann.size_bytes,
                    metrics=dict(ann.metrics),
                    samples_trained_total=ann.samples_trained_total,
                    trace_id=trace_id,
                )
                .on_conflict_do_nothing()
            )
            # the groups' rows first, then their samples: the order record_samples takes them in
            await conn.execute(
                select(PromptGroup.group_id)
                .where(
                    PromptGroup.group_id.in_(
                        select(Sample.group_id).where(Sample.sample_id.in_([a.sample_id for a in ann.advantages]))
                    )
                )
                .order_by(PromptGroup.group_id)
                .with_for_update()
            )
            if ann.advantages:
                await conn.execute(
                    update(Sample)
                    .where(Sample.sample_id == bindparam("sid"), Sample.run_id == ann.run_id)
                    .values(
                        advantage=bindparam("adv"),
                        trained_version=ann.version,
                        staleness=bindparam("stale"),
                        trained_tokens=bindparam("trained"),
                        stale_masked_tokens=bindparam("masked"),
                        offpolicy_tokens=bindparam("offpolicy"),
                    )
                    .execution_options(synchronize_session=False),
                    [
                        dict(
                            sid=a.sample_id,
                            adv=a.advantage,
                            stale=a.staleness,
                            trained=a.trained_tokens,
                            masked=a.stale_masked_tokens,
                            offpolicy=a.offpolicy_tokens,
                        )
                        for a in ann.advantages
                    ],
                )
            # by sample, not by batch id: the announcement may be recorded before its batch row
            trained_groups = (
                select(Sample.group_id)
                .where(Sample.sample_id.in_([a.sample_id for a in ann.advantages]))
                .scalar_subquery()
            )
            await conn.execute(
                update(PromptGroup)
                .where(PromptGroup.group_id.in_(trained_groups), PromptGroup.state.in_(GroupState.TRAINED.earlier()))
                .values(state=GroupState.TRAINED)
            )
            await conn.execute(
                update(Run)
                .where(Run.run_id == ann.run_id, Run.policy_version < ann.version)
                .values(policy_version=ann.version, updated_at=func.now())
            )

    async def versions_recorded(self, run_id: str) -> int:
        """How many of the run's versions have their row (announcements may arrive out of order)."""
        async with self.engine.connect() as conn:
            return (await conn.execute(select(func.count()).where(PolicyVersion.run_id == run_id))).scalar_one()

    async def record_teacher(self, run_id: str, version: int) -> None:
        """The EMA teacher absorbed policy version `version` (its weights are the teacher stream's)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(Run)
                .where(Run.run_id == run_id, func.coalesce(Run.teacher_version, -1) < version)
                .values(teacher_version=version)
            )

    async def prompt_evidence(self, run_id: str) -> list[tuple[int, int, int, int]]:
        """(problem, version generated at, successes, failures) of every scored group whose problem
        the scheduler chose, over its trained views' samples (reward > 0.5 counts as a success)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(
                    PromptGroup.problem,
                    PromptGroup.admitted_version,
                    func.count().filter(Sample.reward > 0.5),
                    func.count().filter(Sample.reward <= 0.5),
                )
                .join(Sample, Sample.group_id == PromptGroup.group_id)
                .where(PromptGroup.run_id == run_id, PromptGroup.problem.is_not(None), Sample.reward.is_not(None))
                .group_by(PromptGroup.group_id, PromptGroup.problem, PromptGroup.admitted_version)
            )
            # the WHERE leaves out groups without a problem; the row type cannot know
            return [(p, v, s, f) for p, v, s, f in rows]  # type: ignore[misc]

    async def group_problems(self, run_id: str) -> dict[int, int]:
        """n -> problem index of the run's groups in flight (generating or partial) whose problem
        the scheduler chose."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(PromptGroup.n, PromptGroup.problem).where(
                    PromptGroup.run_id == run_id,
                    PromptGroup.state.in_(IN_FLIGHT),
                    PromptGroup.problem.is_not(None),
                )
            )
            # the WHERE leaves out groups without a problem; the row type cannot know
            return dict(rows.all())  # type: ignore[arg-type]


async def unfinished(conn, group_id: str) -> list[int]:
    """Indices of the group's samples not finished yet (no row in `samples`), in order."""
    size = (
        await conn.execute(
            select(Run.group_size)
            .join(PromptGroup, PromptGroup.run_id == Run.run_id)
            .where(PromptGroup.group_id == group_id)
        )
    ).scalar_one()
    finished = set((await conn.execute(select(Sample.index).where(Sample.group_id == group_id))).scalars())
    return [i for i in range(size) if i not in finished]


async def accounted(conn, group_id: str, attempt: int) -> bool:
    """Has every sample of the group finished, or been handed back by attempt `attempt`?"""
    reported = set(
        (
            await conn.execute(
                select(PartialSample.index).where(PartialSample.group_id == group_id, PartialSample.attempt == attempt)
            )
        ).scalars()
    )
    return set(await unfinished(conn, group_id)) <= reported
