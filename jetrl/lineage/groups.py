"""Groups: admitting prompt groups, moving their state forward, and the group queries the
scheduler decides on (counts, groups generating, complete, their problems and evidence).

Writes are idempotent; each method is one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.selectable import ScalarSelect

from jetrl.ids import group_number
from jetrl.lineage.models import Batch, Prompt, PromptGroup, Run, Sample
from jetrl.lineage.role import EngineRole
from jetrl.states import IN_FLIGHT, GroupState
from jetrl.v1 import events_pb2

__all__ = ["AdmissionView", "Groups", "NewGroup", "admission_view_statement"]


@dataclass(frozen=True)
class NewGroup:
    """A group to admit: its main-view task, the reference answer, the trace it lives in, the
    rephrased prompt when the analogous view is sampled, and the task's problem index when the
    scheduler chose it (not n)."""

    task: events_pb2.Task
    reference: str
    traceparent: str = ""
    trace_id: str = ""
    analogous: str | None = None
    problem: int | None = None


@dataclass(frozen=True)
class AdmissionView:
    """What admission decides from, read in one statement (one snapshot) whose cost does not grow
    with the run's groups: it counts through an index only the groups still moving and the run's
    batches, and takes each state's largest group number, so a run's thousandth version is decided
    about as fast as its first (a GROUP BY over every group of the run was 20 ms at 200,000)."""

    state: str  # the run's
    policy_version: int  # its head
    admitted: int  # groups generating now
    complete: int  # groups whose generation is complete and that are not in a batch yet (generated, scored)
    batches_sealed: int
    groups: int  # every group the run ever admitted: the next one's number

    def accepted(self, batch_groups: int) -> int:
        """Groups whose generation is complete and that still count (AReaL counts a rollout once it
        is done): the unbatched ones and every sealed batch's, since a batch is sealed with exactly
        `batch_groups` groups and they never leave it (batched, then trained)."""
        return self.complete + batch_groups * self.batches_sealed


class Groups(EngineRole):
    async def admission_view(self, run_id: str) -> AdmissionView | None:
        """The run's AdmissionView; None when it has no row."""
        async with self.connect() as conn:
            row = (await conn.execute(admission_view_statement(run_id))).first()
        return None if row is None else AdmissionView(*row)

    async def admit_groups(self, groups: Sequence[NewGroup]) -> None:
        """New groups and their prompts, in one transaction and two statements."""
        if not groups:
            return
        async with self.begin() as conn:
            await conn.execute(
                insert(Prompt).on_conflict_do_nothing(),
                [
                    dict(
                        run_id=g.task.run_id,
                        prompt_id=g.task.prompt_id,
                        prompt=g.task.prompt,
                        reference=g.reference,
                        analogous=g.analogous,
                    )
                    for g in groups
                ],
            )
            await conn.execute(
                insert(PromptGroup).on_conflict_do_nothing(),
                [
                    dict(
                        group_id=g.task.group_id,
                        run_id=g.task.run_id,
                        n=group_number(g.task.group_id),
                        problem=g.problem,
                        prompt_id=g.task.prompt_id,
                        admitted_version=g.task.policy_version,
                        attempt_version=g.task.policy_version,
                        state=GroupState.ADMITTED,
                        view=g.task.view or "main",
                        traceparent=g.traceparent,
                        trace_id=g.trace_id,
                    )
                    for g in groups
                ],
            )

    async def group_counts(self, run_id: str) -> dict[str, int]:
        async with self.connect() as conn:
            rows = await conn.execute(
                select(PromptGroup.state, func.count()).where(PromptGroup.run_id == run_id).group_by(PromptGroup.state)
            )
            return {state: 0 for state in GroupState} | dict(rows.all())

    async def admitted_groups(self, run_id: str) -> list[tuple[int, int, int, str]]:
        """(n, attempt, version it started on, traceparent) of groups generating now, in admission order."""
        async with self.connect() as conn:
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
        async with self.connect() as conn:
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
        async with self.connect() as conn:
            return (await conn.execute(select(PromptGroup.state).where(PromptGroup.group_id == group_id))).scalar()

    async def traceparents(self, group_ids: Sequence[str]) -> dict[str, str]:
        """group id -> the traceparent of its trace ('' when it has none), for the groups that exist."""
        async with self.connect() as conn:
            rows = await conn.execute(
                select(PromptGroup.group_id, PromptGroup.traceparent).where(PromptGroup.group_id.in_(group_ids))
            )
            return {g: tp or "" for g, tp in rows}

    async def mark_groups(self, group_ids: Sequence[str], state: GroupState) -> None:
        """Move groups forward to `state`; a group already there or further stays put."""
        async with self.begin() as conn:
            await conn.execute(
                update(PromptGroup)
                .where(PromptGroup.group_id.in_(group_ids), PromptGroup.state.in_(GroupState(state).earlier()))
                .values(state=state)
            )

    async def prompt_evidence(self, run_id: str) -> list[tuple[int, int, int, int]]:
        """(problem, version generated at, successes, failures) of every scored group whose problem
        the scheduler chose, over its trained views' samples (reward > 0.5 counts as a success)."""
        async with self.connect() as conn:
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
        async with self.connect() as conn:
            rows = await conn.execute(
                select(PromptGroup.n, PromptGroup.problem).where(
                    PromptGroup.run_id == run_id,
                    PromptGroup.state.in_(IN_FLIGHT),
                    PromptGroup.problem.is_not(None),
                )
            )
            # the WHERE leaves out groups without a problem; the row type cannot know
            return dict(rows.all())  # type: ignore[arg-type]


def admission_view_statement(run_id: str) -> Select:
    """The query behind `Groups.admission_view`: the run's row, with each count as a subquery."""
    of_run = PromptGroup.run_id == run_id

    def count(*states: GroupState) -> ScalarSelect:
        return select(func.count()).where(of_run, PromptGroup.state.in_(states)).scalar_subquery()

    def newest(state: GroupState) -> ScalarSelect:
        return select(func.max(PromptGroup.n)).where(of_run, PromptGroup.state == state).scalar_subquery()

    return select(
        Run.state,
        Run.policy_version,
        count(GroupState.ADMITTED),
        count(GroupState.GENERATED, GroupState.SCORED),
        select(func.count()).where(Batch.run_id == run_id).scalar_subquery(),
        # group numbers are dense from 0 (admission numbers new groups from this): the newest
        # group's, as the largest of each state's newest, one step down the index each
        func.coalesce(func.greatest(*(newest(state) for state in GroupState)) + 1, 0),
    ).where(Run.run_id == run_id)
