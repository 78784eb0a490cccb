"""Prompt sources: a `Task` gives an endless deterministic training stream and a held-out set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from jetrl.config import TaskSpec

__all__ = ["Problem", "Task", "make_task"]


@dataclass(frozen=True)
class Problem:
    """One prompt with its reference answer (a number, as text), and its analogous rephrasing
    (same answer, different surface; Co-Reward's view q') when the task has one."""

    prompt_id: str
    prompt: str
    answer: str
    analogous: str | None = None


class Task(Protocol):
    """What the scheduler, reward and evaluation code need from a task."""

    name: str
    has_analogous: bool
    """Whether every training problem carries an analogous rephrasing."""

    def train_problem(self, index: int) -> Problem:
        """Training problem number `index` (deterministic)."""
        ...

    def heldout(self) -> list[Problem]:
        """The fixed held-out evaluation set."""
        ...


def make_task(spec: TaskSpec) -> Task:
    """Build the task a run spec names."""
    # Imported here: the task modules import Problem from this package.
    if spec.name == "arithmetic":
        from jetrl.tasks.arithmetic import ArithmeticTask

        return ArithmeticTask(spec)
    if spec.name == "gsm8k":
        from jetrl.tasks.gsm8k import Gsm8kTask

        return Gsm8kTask(spec)
    raise ValueError(f"unknown task {spec.name!r}")
