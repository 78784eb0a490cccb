"""Versions: each policy version the trainer announced (its row, the trained samples' advantages,
the run's head) and the EMA teacher's version.

Writes are idempotent; each method is one transaction (`record_version`: two, `record_head` and
`record_trained`, which the recorder runs with the next admission between them).
"""

from __future__ import annotations

from sqlalchemy import Float, Integer, String, func, select, update
from sqlalchemy.dialects.postgresql import insert

from jetrl.ids import batch_id
from jetrl.lineage.models import Batch, PolicyVersion, PromptGroup, Run, Sample
from jetrl.lineage.role import EngineRole, table_of
from jetrl.states import GroupState, ViewName
from jetrl.v1 import events_pb2

__all__ = ["Versions"]

# The fields of a WeightsAnnouncement its policy_versions row keeps as they are, by name.
_ANNOUNCED = ("run_id", "version", "parent_version", "batch_id", "uri", "sha256", "size_bytes", "samples_trained_total")


class Versions(EngineRole):
    async def record_version(self, ann: events_pb2.WeightsAnnouncement, trace_id: str) -> None:
        """A new version: `record_head`, then `record_trained`."""
        await self.record_head(ann, trace_id)
        await self.record_trained(ann)

    async def record_head(self, ann: events_pb2.WeightsAnnouncement, trace_id: str) -> None:
        """A new version's row and the run's head: what admission waits for, in a transaction of
        its own so that the next groups need not wait for `record_trained` too."""
        async with self.begin() as conn:
            announced = {f: getattr(ann, f) for f in _ANNOUNCED}
            await conn.execute(
                insert(PolicyVersion)
                .values(**announced, metrics=dict(ann.metrics), trace_id=trace_id)
                .on_conflict_do_nothing()
            )
            await conn.execute(
                update(Run)
                .where(Run.run_id == ann.run_id, Run.policy_version < ann.version)
                .values(policy_version=ann.version, updated_at=func.now())
            )

    async def record_trained(self, ann: events_pb2.WeightsAnnouncement) -> None:
        """What a recorded version trained: each sample's advantage and trained version, its
        groups "trained". Idempotent; until it commits the version's samples read as untrained (a
        redelivered announcement completes it: its version row is already there)."""
        async with self.begin() as conn:
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
                v = table_of(
                    "v",
                    [
                        (
                            a.sample_id,
                            a.advantage,
                            a.staleness,
                            a.trained_tokens,
                            a.stale_masked_tokens,
                            a.offpolicy_tokens,
                        )
                        for a in ann.advantages
                    ],
                    sample_id=String(),
                    advantage=Float(),
                    staleness=Integer(),
                    trained=Integer(),
                    masked=Integer(),
                    offpolicy=Integer(),
                )
                await conn.execute(
                    update(Sample)
                    .where(Sample.sample_id == v.c.sample_id, Sample.run_id == ann.run_id)
                    .values(
                        advantage=v.c.advantage,
                        trained_version=ann.version,
                        staleness=v.c.staleness,
                        trained_tokens=v.c.trained,
                        stale_masked_tokens=v.c.masked,
                        offpolicy_tokens=v.c.offpolicy,
                    )
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

    async def announcement_problem(self, ann: events_pb2.WeightsAnnouncement) -> str | None:
        """Why `ann` cannot be the trainer's version `ann.version` of its run, as lineage knows
        it; None when it can be (a redelivery of a recorded version included). Version v comes
        from v - 1 and the batch of step v - 1, which lineage sealed before the trainer could
        have it, and it trains exactly that batch's trained samples."""
        run_id, version = ann.run_id, ann.version
        sealed_id = batch_id(run_id, version - 1) if version >= 1 else ""
        if version < 1 or ann.parent_version != version - 1 or ann.batch_id != sealed_id:
            return (
                f"announced v{version} from v{ann.parent_version} and batch {ann.batch_id!r}: a version "
                f"v (>= 1) comes from v - 1 and batch {sealed_id or '<run>.b<v-1>'}"
            )
        async with self.connect() as conn:
            recorded = (
                await conn.execute(
                    select(PolicyVersion.sha256).where(PolicyVersion.run_id == run_id, PolicyVersion.version == version)
                )
            ).scalar_one_or_none()
            if recorded is not None:
                same = recorded == ann.sha256
                return None if same else f"v{version} is recorded with other weights (sha256 {recorded})"
            if (await conn.execute(select(Batch.batch_id).where(Batch.batch_id == sealed_id))).first() is None:
                return f"batch {sealed_id} was never sealed: no version can come from it"
            sealed = set(
                (
                    await conn.execute(
                        # sealing marks the batch's samples with its id, in the transaction that marks its groups
                        select(Sample.sample_id).where(Sample.batch_id == sealed_id, Sample.view != ViewName.TEACHER)
                    )
                ).scalars()
            )
        named = {a.sample_id for a in ann.advantages}
        if named != sealed:
            return (
                f"v{version} names {len(named - sealed)} samples batch {sealed_id} does not hold and misses "
                f"{len(sealed - named)} it does (of {len(sealed)})"
            )
        return None

    async def versions_recorded(self, run_id: str) -> int:
        """How many of the run's versions have their row (announcements may arrive out of order)."""
        async with self.connect() as conn:
            return (await conn.execute(select(func.count()).where(PolicyVersion.run_id == run_id))).scalar_one()

    async def record_teacher(self, run_id: str, version: int) -> None:
        """The EMA teacher absorbed policy version `version` (its weights are the teacher stream's)."""
        async with self.begin() as conn:
            await conn.execute(
                update(Run)
                .where(Run.run_id == run_id, func.coalesce(Run.teacher_version, -1) < version)
                .values(teacher_version=version)
            )
