"""Samples: recording what the rollout workers generated (finished samples, the partial buffer's
prefixes, every attempt's segment) and reading a group back with its samples.

`accounted` and `unfinished` are the partial buffer's questions too (`jetrl.lineage.buffer`).
Writes are idempotent; each method is one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import and_, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert

from jetrl.lineage.models import PartialSample, Prompt, PromptGroup, Run, Sample, SampleSegment
from jetrl.lineage.role import EngineRole
from jetrl.states import IN_FLIGHT, FinishReason, GroupState
from jetrl.v1 import events_pb2
from jetrl.views import ANALOGOUS, MAIN, TEACHER

__all__ = ["GroupProgress", "Samples", "UnknownGroup", "accounted", "read_groups", "unfinished"]


class UnknownGroup(LookupError):
    """An event names a prompt group the scheduler never admitted."""


@dataclass(frozen=True)
class GroupProgress:
    """Where a group stands after a write of its samples."""

    complete: int  # samples finished (eos or length)
    state: str
    accounted: bool  # every sample is finished or reported by the current attempt (resumable)
    # (sample id, attempt) -> why it was not stored: new samples for an attempt not in flight
    refused: dict[tuple[str, int], str] = field(default_factory=dict)


# The fields a Sample message and its `samples` row share, by name (the repeated ones are lists in
# the row): a sample is written from its message and read back into one through these.
_SHARED = ("sample_id", "run_id", "group_id", "index", "text", "finish_reason", "worker_id", "prefix_len")
_SHARED_LISTS = ("prompt_token_ids", "completion_token_ids", "logprobs", "token_versions")


def _sample_row(sample: events_pb2.Sample, trace_id: str) -> dict:
    versions = list(sample.token_versions) or [0]
    shared = {f: getattr(sample, f) for f in _SHARED} | {f: list(getattr(sample, f)) for f in _SHARED_LISTS}
    return shared | dict(
        min_version=min(versions), max_version=max(versions), trace_id=trace_id, view=sample.view or MAIN
    )


def _attempt_key(sample: events_pb2.Sample) -> dict:
    """Which attempt at which sample: the key of its partial and of its segment, with their run and group."""
    return dict(sample_id=sample.sample_id, attempt=sample.attempt, run_id=sample.run_id, group_id=sample.group_id)


def _partial_row(sample: events_pb2.Sample) -> dict:
    return _attempt_key(sample) | dict(
        index=sample.index,
        token_ids=list(sample.completion_token_ids),
        logprobs=list(sample.logprobs),
        token_versions=list(sample.token_versions),
    )


def _segment_row(sample: events_pb2.Sample) -> dict:
    """This attempt's own stretch of the sample: the tokens after the prefix it was given."""
    own = list(sample.token_versions)[sample.prefix_len :]
    return _attempt_key(sample) | dict(
        worker_id=sample.worker_id,
        start=sample.prefix_len,
        end=len(sample.completion_token_ids),
        min_version=min(own) if own else None,
        max_version=max(own) if own else None,
        finish_reason=sample.finish_reason,
    )


class Samples(EngineRole):
    async def record_samples(
        self, samples: list[tuple[events_pb2.Sample, str]]
    ) -> dict[tuple[str, str], GroupProgress | None]:
        """Store (sample, trace id) pairs in one transaction: finished samples as samples, aborted
        ones in the partial buffer, every one as a segment. Returns, per (group id, run id) the
        samples name, the group's progress, or None when that run never admitted that group (such
        samples are not stored)."""
        pairs = sorted({(s.group_id, s.run_id) for s, _ in samples})
        async with self.begin() as conn:
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
            refused = await _stray(conn, [s for s, _ in ours], known)
            ours = [(s, t) for s, t in ours if (s.sample_id, s.attempt) not in refused.get(s.group_id, {})]
            if ours:
                await conn.execute(insert(SampleSegment).on_conflict_do_nothing(), [_segment_row(s) for s, _ in ours])
            finished = [_sample_row(s, t) for s, t in ours if s.finish_reason != FinishReason.ABORTED]
            if finished:
                await conn.execute(insert(Sample).on_conflict_do_nothing(), finished)
            # a first attempt's sample has one segment and nothing regenerated: the columns' defaults
            if ids := [s.sample_id for s, _ in ours if s.finish_reason != FinishReason.ABORTED and s.attempt > 0]:
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
                    complete.get(g, 0),
                    state,
                    state == GroupState.PARTIAL and await accounted(conn, g, attempt),
                    refused.get(g, {}),
                )
        return {pair: progress.get(pair) for pair in pairs}

    async def load_group(self, group_id: str) -> events_pb2.PromptGroup:
        return (await self.load_groups([group_id]))[group_id]

    async def load_groups(
        self, group_ids: Sequence[str], recorded: Mapping[str, Sequence[events_pb2.Sample]] | None = None
    ) -> dict[str, events_pb2.PromptGroup]:
        """Several groups with their samples, in two queries whatever their number (`read_groups`)."""
        async with self.connect() as conn:
            return await read_groups(conn, group_ids, recorded)


async def _stray(
    conn, samples: list[events_pb2.Sample], groups: dict[tuple[str, str], tuple[str, int]]
) -> dict[str, dict[tuple[str, int], str]]:
    """Per group, the samples that may not be stored, with why: a new (sample, attempt) is only ever the
    work of the attempt in flight, so one for a group that is done generating, or for another
    attempt, is forged or stray; stored, it would change a trained group's lineage or take the
    message id the real sample needs. A redelivery of what is stored (the same attempt of the
    sample, ended the same way) is no such sample: its writes change nothing."""
    suspect = [s for s in samples if _not_in_flight(s, *groups[(s.group_id, s.run_id)])]
    if not suspect:
        return {}
    stored = set(
        (
            await conn.execute(
                select(SampleSegment.sample_id, SampleSegment.attempt, SampleSegment.finish_reason).where(
                    tuple_(SampleSegment.sample_id, SampleSegment.attempt).in_(
                        [(s.sample_id, s.attempt) for s in suspect]
                    )
                )
            )
        ).all()
    )
    refused: dict[str, dict[tuple[str, int], str]] = {}
    for s in suspect:
        if (s.sample_id, s.attempt, s.finish_reason) not in stored:
            state, attempt = groups[(s.group_id, s.run_id)]
            refused.setdefault(s.group_id, {})[(s.sample_id, s.attempt)] = (
                f"{'partial ' if s.finish_reason == FinishReason.ABORTED else ''}sample {s.sample_id!r} of "
                f"attempt {s.attempt}: its group is {state} at attempt {attempt}, so no such sample can be new"
            )
    return refused


def _not_in_flight(sample: events_pb2.Sample, state: str, attempt: int) -> bool:
    """Whether the sample cannot be new work of the group's attempt in flight: a group generates
    at its current attempt, and hands partial samples back only once the scheduler recorded its
    abort (state "partial")."""
    if state not in IN_FLIGHT or sample.attempt != attempt:
        return True
    return sample.finish_reason == FinishReason.ABORTED and state != GroupState.PARTIAL


async def read_groups(
    conn, group_ids: Sequence[str], recorded: Mapping[str, Sequence[events_pb2.Sample]] | None = None
) -> dict[str, events_pb2.PromptGroup]:
    """Groups with their prompt and finished samples, read on `conn` (inside its caller's
    transaction); UnknownGroup names the first that was never admitted. `recorded`: groups whose
    finished samples the caller has just stored, every one of them, as these messages: they are
    not read back (the group's head still is)."""
    recorded = recorded or {}
    heads = {
        head.group_id: head
        for head in await conn.execute(
            select(PromptGroup, Prompt.prompt, Prompt.reference, Prompt.analogous)
            .join(Prompt, and_(Prompt.run_id == PromptGroup.run_id, Prompt.prompt_id == PromptGroup.prompt_id))
            .where(PromptGroup.group_id.in_(group_ids))
        )
    }
    if missing := [g for g in group_ids if g not in heads]:
        raise UnknownGroup(f"unknown group {missing[0]!r}")
    samples: dict[str, list] = {
        g: sorted(recorded[g], key=lambda s: s.index) if g in recorded else [] for g in group_ids
    }
    if unread := [g for g in group_ids if g not in recorded]:
        for s in await conn.execute(
            select(Sample).where(Sample.group_id.in_(unread)).order_by(Sample.group_id, Sample.index)
        ):
            samples[s.group_id].append(s)
    return {g: _group_message(heads[g], samples[g]) for g in group_ids}


def _group_message(head, rows: list) -> events_pb2.PromptGroup:
    """A PromptGroup from its head row (group, prompt, reference, analogous) and its samples, in
    index order: their rows, or the Sample messages they were stored from (`_SHARED` fields alike)."""
    views: list[events_pb2.ViewPrompt] = []
    for s in rows:  # the samples are in index order, so each view's are contiguous
        view = s.view or MAIN  # a message may leave it unset; its row never does
        if not views or views[-1].view != view:
            views.append(
                events_pb2.ViewPrompt(
                    view=view,
                    prompt=head.analogous if view == ANALOGOUS else head.prompt,
                    first_index=s.index,
                    trained=view != TEACHER,
                )
            )
        views[-1].size += 1
    return events_pb2.PromptGroup(
        run_id=head.run_id,
        group_id=head.group_id,
        prompt_id=head.prompt_id,
        prompt=head.prompt,
        reference=head.reference,
        step=head.step if head.step is not None else -1,
        policy_version=head.admitted_version,
        samples=[
            events_pb2.Sample(**{f: getattr(s, f) for f in _SHARED + _SHARED_LISTS}, view=s.view or MAIN) for s in rows
        ],
        views=views if [v.view for v in views] != [MAIN] else [],
    )


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
