"""APRIL's partial-rollout buffer, kept in Postgres so that it survives any restart.

A group aborted mid-generation moves admitted -> partial; the worker that was generating it hands
back each unfinished sample's completion so far (tokens, behaviour log-probs, versions) as a
partial sample of that attempt. Once every sample is finished or handed back the group is
*accounted* and may resume: its next attempt carries those prefixes token-in. A stale prefix may
be dropped instead (the run's `stale_partials: regenerate`); its segment then says "dropped".
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update

from jetrl.lineage.models import PartialSample, PromptGroup, Sample, SampleSegment
from jetrl.lineage.role import EngineRole
from jetrl.lineage.samples import accounted, unfinished
from jetrl.states import FinishReason, GroupState
from jetrl.v1 import events_pb2

__all__ = ["PartialBuffer", "Resumed"]


@dataclass(frozen=True)
class Resumed:
    """What a resumed (or re-published) attempt of a group generates."""

    n: int
    attempt: int
    version: int
    traceparent: str
    prefixes: list[events_pb2.Prefix]
    dropped: int = 0  # stale prefixes dropped by this resume


class PartialBuffer(EngineRole):
    async def abort(self, run_id: str, group_ids: list[str]) -> list[tuple[str, int]]:
        """Move generating groups to the buffer; (group id, attempt) of those that moved."""
        async with self.begin() as conn:
            rows = await conn.execute(
                update(PromptGroup)
                .where(
                    PromptGroup.run_id == run_id,
                    PromptGroup.group_id.in_(group_ids),
                    PromptGroup.state == GroupState.ADMITTED,
                )
                .values(state=GroupState.PARTIAL)
                .returning(PromptGroup.group_id, PromptGroup.attempt)
            )
            return [(gid, attempt) for gid, attempt in rows]

    async def unaccounted(self, run_id: str) -> list[tuple[str, int]]:
        """(group id, attempt) of buffered groups still waiting for the aborted attempt's samples:
        the ABORT that stops that attempt must have gone out, or they would wait for ever."""
        async with self.connect() as conn:
            rows = list(
                await conn.execute(
                    select(PromptGroup.group_id, PromptGroup.attempt)
                    .where(PromptGroup.run_id == run_id, PromptGroup.state == GroupState.PARTIAL)
                    .order_by(PromptGroup.n)
                )
            )
            return [(g, a) for g, a in rows if not await accounted(conn, g, a)]

    async def size(self, run_id: str) -> int:
        async with self.connect() as conn:
            return (
                await conn.execute(
                    select(func.count()).where(PromptGroup.run_id == run_id, PromptGroup.state == GroupState.PARTIAL)
                )
            ).scalar_one()

    async def resume(self, run_id: str, limit: int, version: int, stale_before: int | None) -> list[Resumed]:
        """Start the next attempt at `version` of up to `limit` accounted groups of the buffer,
        oldest first (they are served before any new group), in one transaction.

        A prefix whose oldest token is older than `stale_before` is dropped (the sample is
        generated again from its prompt); None keeps every prefix, and the trainer masks what is
        too stale when it trains.
        """
        if limit <= 0:
            return []
        async with self.begin() as conn:
            # locked in group-id order (= admission order), the order record_samples locks groups in
            rows = await conn.execute(
                select(PromptGroup)
                .where(PromptGroup.run_id == run_id, PromptGroup.state == GroupState.PARTIAL)
                .order_by(PromptGroup.group_id)
                .with_for_update()
            )
            resumed: list[Resumed] = []
            for row in rows.all():
                if len(resumed) == limit:
                    break
                if not await accounted(conn, row.group_id, row.attempt):
                    continue  # the aborted attempt's partials are still on their way
                prefixes, dropped = await self._prefixes(conn, row.group_id, row.attempt, stale_before)
                r = Resumed(row.n, row.attempt + 1, version, row.traceparent, prefixes, dropped)
                resumed.append(r)
                await conn.execute(
                    update(PromptGroup)
                    .where(PromptGroup.group_id == row.group_id)
                    .values(
                        state=GroupState.ADMITTED,
                        attempt=r.attempt,
                        attempt_version=version,
                        recycled=PromptGroup.recycled + 1,
                    )
                )
                # the samples it finished before the abort are carried into this attempt whole, as
                # the prefixes are: recycled work, under the recycled bound when trained
                await conn.execute(
                    update(Sample)
                    .where(Sample.group_id == row.group_id)
                    .values(prefix_len=func.cardinality(Sample.completion_token_ids))
                )
            return resumed

    async def current(self, group_id: str) -> Resumed:
        """The attempt a generating group is on now (to publish its task again after a restart)."""
        async with self.connect() as conn:
            row = (await conn.execute(select(PromptGroup).where(PromptGroup.group_id == group_id))).one()
            prefixes = (await self._prefixes(conn, group_id, row.attempt - 1, None))[0] if row.attempt else []
            return Resumed(row.n, row.attempt, row.attempt_version, row.traceparent, prefixes)

    async def _prefixes(self, conn, group_id: str, attempt: int, stale_before: int | None):
        """Prefixes of the samples not yet finished, from what attempt `attempt` handed back."""
        handed = {
            p.index: p
            for p in await conn.execute(
                select(PartialSample).where(PartialSample.group_id == group_id, PartialSample.attempt == attempt)
            )
        }
        prefixes, dropped = [], 0
        for index in await unfinished(conn, group_id):
            p = handed.get(index)
            if p is None or not p.token_ids:
                prefixes.append(events_pb2.Prefix(index=index))
            elif stale_before is not None and min(p.token_versions) < stale_before:
                dropped += 1
                prefixes.append(events_pb2.Prefix(index=index))
                # lineage says which: every stretch of this sample so far was dropped, not trained;
                # the emptied buffer row makes a re-published attempt drop it too
                await conn.execute(
                    update(SampleSegment)
                    .where(SampleSegment.sample_id == p.sample_id, SampleSegment.attempt <= attempt)
                    .values(finish_reason=FinishReason.DROPPED)
                )
                await conn.execute(
                    update(PartialSample)
                    .where(PartialSample.sample_id == p.sample_id, PartialSample.attempt == attempt)
                    .values(token_ids=[], logprobs=[], token_versions=[])
                )
            else:
                prefixes.append(
                    events_pb2.Prefix(
                        index=index, token_ids=p.token_ids, logprobs=p.logprobs, token_versions=p.token_versions
                    )
                )
        return prefixes, dropped
