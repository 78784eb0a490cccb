"""What the scheduler holds for a RUNNING run, made from its spec alone, and the tasks of a group.

Nothing here reads lineage or the bus: an ActiveRun is rebuilt the same after any restart, and a
group's tasks are the same whenever they are (re)published.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from jetrl.config import RunSpec
from jetrl.ids import group_id
from jetrl.policy.prompts import PromptTokenizer
from jetrl.tasks import Problem, Task, make_task
from jetrl.v1 import events_pb2
from jetrl.views import ANALOGOUS, TEACHER, View, layout
from svc_scheduler.admission import Admission
from svc_scheduler.selection import ThompsonSelector

__all__ = ["ActiveRun", "prepare", "make_tasks"]


@dataclass
class ActiveRun:
    """What the scheduler keeps in memory for a RUNNING run (all of it derivable from the spec)."""

    run_id: str
    spec: RunSpec
    task: Task
    tokenizer: PromptTokenizer  # no torch in the scheduler
    admission: Admission
    views: list[View]
    selector: ThompsonSelector | None  # None: problem n of the task's own stream for group n
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def prepare(run_id: str, spec: RunSpec) -> ActiveRun:
    """Load what deciding for this run needs (not active yet: Coordinator.start makes it so);
    raises ValueError when the model dir or the task cannot serve the spec."""
    task = make_task(spec.task)
    if spec.rollout.analogous_view and not task.has_analogous:
        raise ValueError(
            f"rollout.analogous_view needs a rephrasing of every problem: give {spec.task.path} a "
            f"`{spec.task.rephrase_field}` column, or task.rephrase_path"
        )
    s = spec.schedule
    run = ActiveRun(
        run_id=run_id,
        spec=spec,
        task=task,
        views=layout(spec),
        selector=ThompsonSelector(s.prompt_pool, s.thompson_decay) if s.prompt_selection == "thompson" else None,
        tokenizer=PromptTokenizer.load(spec.model.path, chat=spec.task.chat_template),
        admission=Admission(
            max_staleness=spec.schedule.max_staleness,
            batch_groups=spec.train.batch_groups,
            max_concurrent=spec.schedule.max_concurrent,
            total_steps=spec.train.steps,
            over_provision=spec.schedule.over_provision,
            regenerate_after_lag=s.recycled_bound if s.stale_partials == "regenerate" else None,
        ),
    )
    return run


def _prompt(p: Problem, view: str) -> str:
    """The prompt of `view`: the analogous rephrasing for the analogous view (prepare refuses that
    view for a task without one), else the problem's own."""
    if view != ANALOGOUS:
        return p.prompt
    if p.analogous is None:
        raise ValueError(f"{p.prompt_id} has no analogous rephrasing")
    return p.analogous


def make_tasks(
    run: ActiveRun,
    n: int,
    version: int,
    problem: int | None = None,
    attempt: int = 0,
    resume: Sequence[events_pb2.Prefix] = (),
) -> list[events_pb2.Task]:
    """Tasks for attempt `attempt` of group n (deterministic), one per view at attempt 0 (a
    resumed attempt exists only for single-view runs: RunSpec refuses APRIL with views)."""
    p = run.task.train_problem(n if problem is None else problem)
    r = run.spec.rollout
    tasks = []
    for view in run.views if attempt == 0 else run.views[:1]:
        prompt = _prompt(p, view.name)
        teacher = run.spec.teacher if view.name == TEACHER else None  # a teacher view exists only with one
        tasks.append(
            events_pb2.Task(
                run_id=run.run_id,
                group_id=group_id(run.run_id, n),
                prompt_id=p.prompt_id,
                prompt=prompt,
                prompt_token_ids=run.tokenizer.encode(prompt),
                num_samples=view.size,
                policy_version=version,
                step=n // run.spec.train.batch_groups,  # expected; the batch it joins is decided when complete
                sampling=events_pb2.SamplingParams(
                    temperature=teacher.temperature if teacher is not None else r.temperature,
                    top_p=r.top_p,
                    max_new_tokens=r.max_new_tokens,
                    seed=(run.spec.seed * 1_000_003 + n) % (1 << 63),
                ),
                view=view.name,
                attempt=attempt,
                resume=resume,
                first_index=view.first_index,
            )
        )
    return tasks
