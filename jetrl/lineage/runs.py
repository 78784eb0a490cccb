"""Runs: a run's row (created once, its state moved by the scheduler), and reading it back.

Each method is one transaction.
"""

from __future__ import annotations

from sqlalchemy import func, select, update

from jetrl.lineage.models import Run
from jetrl.lineage.role import EngineRole
from jetrl.states import RunState

__all__ = ["Runs"]


class Runs(EngineRole):
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
        await self.insert_once(
            Run,
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

    async def get_run(self, run_id: str) -> Run | None:
        async with self.connect() as conn:
            # a Core connection returns the runs row's columns (what callers read), not a Run entity
            return (await conn.execute(select(Run).where(Run.run_id == run_id))).one_or_none()  # type: ignore[return-value]

    async def list_runs(self) -> list:
        return await self.rows(select(Run).order_by(Run.created_at))

    async def set_run_state(self, run_id: str, state: RunState, message: str) -> None:
        async with self.begin() as conn:
            await conn.execute(
                update(Run).where(Run.run_id == run_id).values(state=state, message=message, updated_at=func.now())
            )
