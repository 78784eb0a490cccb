"""What must hold after every trial, read back from lineage (and the trainer's own count).

- completed: the run is COMPLETED, with no message (a message means the final held-out
  evaluation failed).
- accounted: every group the scheduler admitted ended trained, expired, filtered, or dropped with
  its reward error. Only an over-provisioned (APRIL) run may leave spare groups, and only where
  APRIL leaves them: in the partial buffer, or generated/scored after its last batch was full. A
  group sealed into a batch and never trained is never allowed.
- trained once: versions 1..v each train one distinct batch of B groups; each trained group's
  trained samples, all of them and no more, carry its batch and that batch's version; nothing
  outside a trained group is trained; v·B·G trained samples in all.
- trainer count: TrainerService's samples_trained equals lineage's trained count and the newest
  version's own total.
(The fifth, no crash — no process of the stack exited without being killed — is the trial's own,
trial.py, from the pids.)

For a run that did not complete, `stranded` finds the stall's usual signature: groups whose
samples are all in lineage but which are still "admitted", so nothing will ever score them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from jetrl.config import RunSpec
from jetrl.lineage.models import Batch, PolicyVersion, PromptGroup, Run, Sample
from jetrl.views import group_size, layout

__all__ = ["Check", "check_run", "stranded"]

TERMINAL = ("trained", "expired", "filtered", "dropped")
APRIL_SPARES = ("partial", "generated", "scored")  # where over-provisioning may leave groups at the end


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _listing(problems: list[str], limit: int = 4) -> str:
    more = f" (+{len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


async def stranded(engine: AsyncEngine, run_id: str, spec: RunSpec) -> list[str]:
    """Groups still "admitted" although every one of their samples is recorded."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(PromptGroup.group_id)
            .join(Sample, Sample.group_id == PromptGroup.group_id)
            .where(PromptGroup.run_id == run_id, PromptGroup.state == "admitted")
            .group_by(PromptGroup.group_id)
            .having(func.count() >= group_size(spec))
            .order_by(PromptGroup.group_id)
        )
        return list(rows.scalars())


def _completed(run) -> Check:
    if run is None:
        return Check("completed", False, "the run is not in lineage")
    ok = run.state == "COMPLETED" and not run.message
    return Check(
        "completed",
        ok,
        f"{run.state} at v{run.policy_version}/{run.total_steps}" + (f": {run.message}" if run.message else ""),
    )


def _accounted(groups: list, spec: RunSpec, done: bool, stuck: list[str]) -> Check:
    spares_allowed = spec.schedule.over_provision > 1 and done
    problems = [f"{g.group_id} dropped without a reason" for g in groups if g.state == "dropped" and not g.reward_error]
    left = Counter(
        g.state for g in groups if g.state not in TERMINAL and not (spares_allowed and g.state in APRIL_SPARES)
    )
    problems += [f"{n} {state}" for state, n in sorted(left.items())]
    if stuck:
        problems.append(f"{len(stuck)} stranded (admitted with all samples in): {_listing(stuck, 3)}")
    counts = Counter(g.state for g in groups)
    summary = ", ".join(f"{counts[s]} {s}" for s in (*TERMINAL, *APRIL_SPARES, "admitted", "batched") if counts[s])
    return Check(
        "accounted",
        not problems,
        f"{len(groups)} groups: {summary}" + (f" — not accounted for: {_listing(problems)}" if problems else ""),
    )


def _trained_once(spec: RunSpec, groups: list, batches: list, versions: list, samples: list) -> Check:
    b, g = spec.train.batch_groups, sum(v.size for v in layout(spec) if v.trained)
    problems = []
    newest = versions[-1].version if versions else 0
    missing = sorted(set(range(1, newest + 1)) - {v.version for v in versions})
    if missing:
        problems.append(
            f"version{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of 1..{newest} not in lineage"
        )
    batch_of_version = {v.batch_id: v.version for v in versions}
    if len(batch_of_version) != len(versions):
        problems.append("a batch trained by two versions")
    steps = Counter(x.step for x in batches)
    problems += [f"step {s} sealed {n} times" for s, n in steps.items() if n > 1]
    sealed = {x.batch_id for x in batches}
    problems += [
        f"version {v} trained an unknown batch {bid}" for bid, v in batch_of_version.items() if bid not in sealed
    ]
    per_batch = Counter(x.batch_id for x in groups if x.batch_id)
    problems += [f"batch {bid} has {n} groups, not {b}" for bid, n in per_batch.items() if n != b]
    group_of = {x.group_id: x for x in groups}
    trained_per_group: dict[str, int] = defaultdict(int)
    for s in samples:
        grp = group_of.get(s.group_id)
        trained_per_group[s.group_id] += 1
        if grp is None or grp.state != "trained":
            problems.append(f"sample {s.sample_id} trained but its group is {grp.state if grp else 'unknown'}")
        elif s.batch_id != grp.batch_id or s.trained_version != batch_of_version.get(grp.batch_id):
            problems.append(
                f"sample {s.sample_id} trained by v{s.trained_version} in {s.batch_id}, its group "
                f"by v{batch_of_version.get(grp.batch_id)} in {grp.batch_id}"
            )
    for x in groups:
        if x.state == "trained" and trained_per_group[x.group_id] != g:
            problems.append(f"group {x.group_id} has {trained_per_group[x.group_id]} trained samples, not {g}")
    if len(samples) != len(versions) * b * g:
        problems.append(f"{len(samples)} trained samples for {len(versions)} versions, not {len(versions) * b * g}")
    return Check(
        "trained once",
        not problems,
        _listing(problems)
        if problems
        else f"{len(versions)} versions, each one batch of {b} groups, {len(samples)} samples once each",
    )


def _trainer_count(trainer: int | None, trainer_error: str, versions: list, samples: list) -> Check:
    own = versions[-1].samples_trained_total if versions else 0
    if trainer is None:
        return Check("trainer count", False, f"trainer unreachable: {trainer_error}")
    ok = trainer == len(samples) == own
    return Check("trainer count", ok, f"trainer {trainer}, lineage {len(samples)}, newest version's total {own}")


async def check_run(
    engine: AsyncEngine, run_id: str, spec: RunSpec, trainer: int | None, trainer_error: str = ""
) -> list[Check]:
    """Every invariant of one run; `trainer` is TrainerService's samples_trained (None: unreachable)."""
    async with engine.connect() as conn:
        run = (await conn.execute(select(Run).where(Run.run_id == run_id))).one_or_none()
        groups = list(
            await conn.execute(
                select(PromptGroup.group_id, PromptGroup.state, PromptGroup.batch_id, PromptGroup.reward_error).where(
                    PromptGroup.run_id == run_id
                )
            )
        )
        batches = list(await conn.execute(select(Batch.batch_id, Batch.step).where(Batch.run_id == run_id)))
        versions = list(
            await conn.execute(
                select(PolicyVersion.version, PolicyVersion.batch_id, PolicyVersion.samples_trained_total)
                .where(PolicyVersion.run_id == run_id)
                .order_by(PolicyVersion.version)
            )
        )
        samples = list(
            await conn.execute(
                select(Sample.sample_id, Sample.group_id, Sample.batch_id, Sample.trained_version).where(
                    Sample.run_id == run_id, Sample.trained_version.is_not(None)
                )
            )
        )
    done = run is not None and run.state == "COMPLETED"
    stuck = [] if done else await stranded(engine, run_id, spec)
    return [
        _completed(run),
        _accounted(groups, spec, done, stuck),
        _trained_once(spec, groups, batches, versions, samples),
        _trainer_count(trainer, trainer_error, versions, samples),
    ]
