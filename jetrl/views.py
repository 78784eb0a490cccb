"""The views of a prompt group: which prompts it samples, how many samples each, which are trained.

A group is one question. Its "main" view is the question as the task states it; with
`rollout.analogous_view` it also has the task's "analogous" rephrasing (Co-rewarding-I), sampled
and trained like the main one; with a `teacher` it also has G~ samples of the main prompt from the
EMA teacher (Co-rewarding-II), which only inform rewards and are never trained. Samples of a group
are indexed view after view, so sample ids stay `<group>.<index>` and a group is complete when all
`group_size(spec)` samples are in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from jetrl.config import RunSpec
from jetrl.states import ViewName
from jetrl.v1 import events_pb2

__all__ = ["MAIN", "ANALOGOUS", "TEACHER", "View", "layout", "group_size", "views_of", "split"]

MAIN, ANALOGOUS, TEACHER = ViewName.MAIN, ViewName.ANALOGOUS, ViewName.TEACHER


@dataclass(frozen=True)
class View:
    name: str
    first_index: int
    size: int
    trained: bool


def layout(spec: RunSpec) -> list[View]:
    """The views every group of this run has, in sample-index order."""
    g = spec.rollout.group_size
    views = [View(MAIN, 0, g, True)]
    if spec.rollout.analogous_view:
        views.append(View(ANALOGOUS, g, g, True))
    if spec.teacher is not None:
        views.append(View(TEACHER, len(views) * g, spec.teacher.samples, False))
    return views


def group_size(spec: RunSpec) -> int:
    """Samples in one group, every view's."""
    return sum(v.size for v in layout(spec))


def views_of(group: events_pb2.PromptGroup) -> list[events_pb2.ViewPrompt]:
    """A group's views; a group that lists none has one, "main", of all its samples."""
    if group.views:
        return list(group.views)
    return [events_pb2.ViewPrompt(view=MAIN, prompt=group.prompt, first_index=0, size=len(group.samples), trained=True)]


def split(group: events_pb2.PromptGroup) -> Iterator[tuple[events_pb2.ViewPrompt, list[int]]]:
    """(view, positions in group.samples of its samples) for every view, in order."""
    for view in views_of(group):
        lo, hi = view.first_index, view.first_index + view.size
        yield view, [i for i, s in enumerate(group.samples) if lo <= s.index < hi]
