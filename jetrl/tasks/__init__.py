"""Prompt sources: a `Task` gives an endless deterministic training stream and a held-out set."""

from __future__ import annotations

from jetrl.spec_sections import TaskSpec
from jetrl.tasks.problem import Problem, Task

__all__ = ["Problem", "Task", "make_task"]


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
