"""What a task gives and what every consumer of tasks relies on: Problem and the Task protocol.

Its own module so that the task modules, which make_task imports, need not import the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Problem", "Task"]


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
