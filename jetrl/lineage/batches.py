"""Batches: a group's rewards, sealing batches of scored groups, and a sealed batch as the
trainer gets it.

Writes are idempotent; each method is one transaction.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert

from jetrl.lineage.models import Batch, PromptGroup, Reward, Sample
from jetrl.lineage.role import EngineRole
from jetrl.lineage.samples import UnknownGroup, read_group
from jetrl.states import GroupState
from jetrl.v1 import events_pb2, reward_pb2
from jetrl.views import split

__all__ = ["Batches"]


class Batches(EngineRole):
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
                groups=[await _read_scored(conn, g) for g in ids],
            )


async def _read_scored(conn, group_id: str) -> events_pb2.ScoredGroup:
    group = await read_group(conn, group_id)
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
