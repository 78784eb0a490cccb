"""Batches: a group's rewards, sealing batches of scored groups, and a sealed batch as the
trainer gets it.

Writes are idempotent; each method is one transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, String, Text, func, select, update
from sqlalchemy.dialects.postgresql import insert

from jetrl.lineage.models import Batch, PromptGroup, Reward, Sample
from jetrl.lineage.role import EngineRole, table_of
from jetrl.lineage.samples import UnknownGroup, read_groups
from jetrl.states import GroupState
from jetrl.v1 import events_pb2, reward_pb2
from jetrl.views import split

__all__ = ["Batches", "Scored", "ScoredFetch", "Sealed", "scored_message", "scored_rows"]


def _text(value: str, limit: int | None = None) -> str:
    """What a reward server said, as Postgres can keep it: without NUL (text columns refuse it)
    and cut to its column's length. Anything a server answers must not fail the transaction of
    the other groups of its fetch, nor its run."""
    value = value.replace("\x00", "\ufffd")
    return value[:limit] if limit is not None else value


def scored_rows(
    item: Scored,
    reward_rows: list[dict],
    sample_rewards: list[tuple[str, float]],
    moves: list[tuple[str, str, str, str | None]],
) -> None:
    """Append one scored group's reward rows, its samples' combined rewards and its state move."""
    scored = item.scored
    group = scored.group
    calls = [c for c in scored.calls if c.ok] or [
        events_pb2.RewardCall(endpoint=scored.reward_endpoint, server=scored.reward_server, rewards=scored.rewards)
    ]
    for i in (i for view, idx in split(group) if view.trained for i in idx):
        sample = group.samples[i]
        detail = scored.details[i] if i < len(scored.details) else reward_pb2.SampleScore()
        reward_rows.extend(
            dict(
                sample_id=sample.sample_id,
                server=_text(call.server or "unknown", 128),
                endpoint=_text(call.endpoint, 256),
                reward=call.rewards[i] if i < len(call.rewards) else scored.rewards[i],
                extracted_answer=_text(detail.extracted_answer),
                detail=_text(detail.detail),
                trace_id=item.trace_id,
            )
            for call in calls
        )
        sample_rewards.append((sample.sample_id, scored.rewards[i]))
    failures = "; ".join(f"{c.endpoint}: {c.error}" for c in scored.calls if not c.ok) or None
    moves.append((group.group_id, item.state, _text(scored.reward_server, 128), failures and _text(failures)))


@dataclass(frozen=True)
class Scored:
    """One scored group to record: the event, the state the scheduler decided for it, and the
    trace id its reward rows keep (the scored event's own: a fetch's span is shared by many)."""

    scored: events_pb2.ScoredGroup
    state: GroupState = GroupState.SCORED
    trace_id: str = ""


@dataclass(frozen=True)
class ScoredFetch:
    """What `record_scored_groups` did: per item, its group's state now (a redelivered event finds
    it already moved) or UnknownGroup; and the groups this transaction moved to "scored", each
    named by one item only, so that their samples' rewards in lineage are exactly that item's."""

    states: list[str | UnknownGroup]
    moved: frozenset[str]


@dataclass(frozen=True)
class Sealed:
    """What `seal_batch` did: the batch's groups in admission order (none when it sealed no
    batch), and the scored groups it expired on the way (never batched)."""

    groups: list[str]
    expired: list[str]


class Batches(EngineRole):
    async def record_scored(
        self, scored: events_pb2.ScoredGroup, trace_id: str, state: GroupState = GroupState.SCORED
    ) -> str:
        """`record_scored_groups` of one group; UnknownGroup when it (or one of its samples) is unknown."""
        [result] = (await self.record_scored_groups([Scored(scored, state, trace_id)])).states
        if isinstance(result, UnknownGroup):
            raise result
        return result

    async def record_scored_groups(self, items: Sequence[Scored]) -> ScoredFetch:
        """Rewards of several groups in one transaction: the combined one per sample and each
        endpoint's own, and the state the scheduler decided for each (scored, or filtered or
        dropped: never trained). An item whose group or one of its samples was never recorded is
        UnknownGroup: nothing of it is written. Context-only samples (the teacher's) get no
        reward row."""
        ids = sorted({item.scored.group.group_id for item in items})
        reward_rows: list[dict] = []
        sample_rewards: list[tuple[str, float]] = []
        moves: list[tuple[str, str, str, str | None]] = []
        results: list[str | UnknownGroup | None] = []
        async with self.begin() as conn:
            # the groups' rows first, in one order, then their samples: the order record_samples takes them in
            known_groups = set(
                (
                    await conn.execute(
                        select(PromptGroup.group_id)
                        .where(PromptGroup.group_id.in_(ids))
                        .order_by(PromptGroup.group_id)
                        .with_for_update()
                    )
                ).scalars()
            )
            known = set(
                (await conn.execute(select(Sample.group_id, Sample.sample_id).where(Sample.group_id.in_(ids)))).all()
            )
            for item in items:
                group = item.scored.group
                # a sample of its own group: another group's sample in the same fetch is not
                missing = next((s.sample_id for s in group.samples if (group.group_id, s.sample_id) not in known), None)
                if group.group_id not in known_groups:
                    results.append(UnknownGroup(f"scored group {group.group_id!r} was never admitted"))
                elif missing is not None:
                    results.append(UnknownGroup(f"scored sample {missing!r} was never recorded"))
                else:
                    results.append(None)
                    scored_rows(item, reward_rows, sample_rewards, moves)
            if reward_rows:
                await conn.execute(insert(Reward).on_conflict_do_nothing(), reward_rows)
            if sample_rewards:
                v = table_of("v", sample_rewards, sample_id=String(), reward=Float())
                await conn.execute(
                    update(Sample)
                    .where(Sample.sample_id == v.c.sample_id, Sample.reward.is_(None))
                    .values(reward=v.c.reward)
                )
            moved: list[tuple[str, str]] = []  # (group, state it moved to)
            if moves:
                v = table_of("v", moves, group_id=String(), state=String(), server=String(), error=Text())
                moved = [
                    (g, state)
                    for g, state in await conn.execute(
                        update(PromptGroup)
                        .where(
                            PromptGroup.group_id == v.c.group_id,
                            PromptGroup.state.in_(GroupState.SCORED.earlier()),
                        )
                        .values(state=v.c.state, reward_server=v.c.server, reward_error=v.c.error)
                        .returning(PromptGroup.group_id, PromptGroup.state)
                    )
                ]
            now = dict(
                (
                    await conn.execute(
                        select(PromptGroup.group_id, PromptGroup.state).where(PromptGroup.group_id.in_(ids))
                    )
                ).all()
            )
        named = Counter(item.scored.group.group_id for item in items)
        return ScoredFetch(
            [r if r is not None else now[item.scored.group.group_id] for r, item in zip(results, items)],
            frozenset(g for g, state in moved if state == GroupState.SCORED and named[g] == 1),
        )

    async def seal_batch(self, run_id: str, step: int, size: int, batch_id: str, max_staleness: int) -> Sealed:
        """Make batch `step` of the `size` oldest scored groups, if there are that many and it does
        not exist yet. The groups are chosen and marked in one transaction, so the batch is decided
        once, before it is published (a restart re-publishes the same).

        A scored group whose newest token is already older than `max_staleness` versions at this
        step could only be trained fully masked: it expires instead, and admission replaces it.
        """
        async with self.begin() as conn:
            if (await conn.execute(select(Batch.batch_id).where(Batch.run_id == run_id, Batch.step == step))).first():
                return Sealed([], [])
            scored = PromptGroup.run_id == run_id, PromptGroup.state == GroupState.SCORED
            if (await conn.execute(select(func.count()).where(*scored))).scalar_one() < size:
                # too few to fill it even before any expires (asked on every scored fetch): expiring
                # waits for a batch to choose, and admission counts what it would replace as accepted
                return Sealed([], [])
            # only the scored groups' samples: this runs on every scored fetch, not once per run
            too_old = (
                select(Sample.group_id)
                .join(PromptGroup, PromptGroup.group_id == Sample.group_id)
                .where(PromptGroup.run_id == run_id, PromptGroup.state == GroupState.SCORED)
                .group_by(Sample.group_id)
                .having(func.max(Sample.max_version) < step - max_staleness)
            )
            expired = list(
                (
                    await conn.execute(
                        update(PromptGroup)
                        .where(
                            PromptGroup.run_id == run_id,
                            PromptGroup.state == GroupState.SCORED,
                            PromptGroup.group_id.in_(too_old),
                        )
                        .values(state=GroupState.EXPIRED)
                        .returning(PromptGroup.group_id)
                    )
                ).scalars()
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
                return Sealed([], expired)
            await conn.execute(
                insert(Batch).values(batch_id=batch_id, run_id=run_id, step=step, policy_version=step, trace_id="")
            )
            await conn.execute(
                update(PromptGroup)
                .where(PromptGroup.group_id.in_(ids))
                .values(state=GroupState.BATCHED, batch_id=batch_id, step=step)
            )
            await conn.execute(update(Sample).where(Sample.group_id.in_(ids)).values(batch_id=batch_id))
        return Sealed(list(ids), expired)

    async def set_batch_trace(self, batch_id: str, trace_id: str) -> None:
        async with self.begin() as conn:
            await conn.execute(update(Batch).where(Batch.batch_id == batch_id).values(trace_id=trace_id))

    async def batches_sealed(self, run_id: str) -> int:
        async with self.connect() as conn:
            return (await conn.execute(select(func.count()).where(Batch.run_id == run_id))).scalar_one()

    async def is_sealed(self, run_id: str, batch_id: str) -> bool:
        async with self.connect() as conn:
            found = await conn.execute(select(Batch.batch_id).where(Batch.run_id == run_id, Batch.batch_id == batch_id))
            return found.first() is not None

    async def untrained_batches(self, run_id: str) -> list[str]:
        """Ids of sealed batches some group of which is not trained yet, in step order."""
        async with self.connect() as conn:
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
        """A sealed batch as the trainer gets it, groups in admission order (a handful of queries
        whatever its size)."""
        async with self.connect() as conn:
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
            groups = await read_groups(conn, ids)
            # context-only samples (the teacher's) have no reward: 0 here, and the trainer skips them
            rewards = {
                sid: r or 0.0
                for sid, r in (
                    await conn.execute(select(Sample.sample_id, Sample.reward).where(Sample.group_id.in_(ids)))
                ).all()
            }
            # a sample several servers scored has a row of each: keep the one of the server the reward
            # stage named first (the group's reward_server), else the first by name, whatever the plan
            scores: dict[str, Any] = {}  # Reward rows (Core: its columns, not entities)
            for r in await conn.execute(
                select(Reward)
                .join(Sample, Sample.sample_id == Reward.sample_id)
                .join(PromptGroup, PromptGroup.group_id == Sample.group_id)
                .where(Sample.group_id.in_(ids))
                # byte order, as jetrl.lineage.sealed sorts them in memory: no collation's rules
                .order_by(Reward.sample_id, Reward.server != PromptGroup.reward_server, Reward.server.collate("C"))
            ):
                scores.setdefault(r.sample_id, r)
            return events_pb2.Batch(
                run_id=head.run_id,
                batch_id=batch_id,
                step=head.step,
                policy_version=head.policy_version,
                groups=[scored_message(groups[g], rewards, scores) for g in ids],
            )


def scored_message(group: events_pb2.PromptGroup, rewards: dict[str, float], scores: dict) -> events_pb2.ScoredGroup:
    """A recorded group as a ScoredGroup: its samples' rewards and each one's reward row."""
    mine = [scores[s.sample_id] for s in group.samples if s.sample_id in scores]
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
        reward_server=mine[0].server if mine else "",
    )
