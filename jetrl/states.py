"""The states of runs, groups and samples, declared once.

Values are the strings stored in lineage (and StrEnum members compare and hash as those strings).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "RunState",
    "GroupState",
    "FinishReason",
    "ViewName",
    "WIRE_FINISH_REASONS",
    "IN_FLIGHT",
    "SCORED_KEPT",
]


class RunState(StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    STOPPED = "STOPPED"  # by an operator (StopRun, a STOP control)
    FAILED = "FAILED"  # it could not go on; the run's message says why


class GroupState(StrEnum):
    """A prompt group's life, in order: a group only ever moves to a later state, but for the one
    step back PartialBuffer.resume takes (partial -> admitted). The last four are where a group
    ends; "batched" ends in "trained" once its version is announced."""

    ADMITTED = "admitted"  # its tasks are out; generating
    PARTIAL = "partial"  # APRIL: aborted mid-generation, in the buffer, resumed later
    GENERATED = "generated"  # every sample in, sent to the reward stage
    SCORED = "scored"  # rewarded, waiting for a batch
    BATCHED = "batched"  # in a sealed batch
    TRAINED = "trained"
    EXPIRED = "expired"  # scored, but every token older than max_staleness by its batch: never trained
    FILTERED = "filtered"  # rewards all equal (dynamic sampling, DAPO): carries no signal, never trained
    DROPPED = "dropped"  # a reward endpoint failed under `reward.on_failure: drop`: never trained

    def earlier(self) -> tuple[GroupState, ...]:
        """The states a group may move forward from into this one."""
        order = list(GroupState)
        return tuple(order[: order.index(self)])


IN_FLIGHT = (GroupState.ADMITTED, GroupState.PARTIAL)  # still generating, or waiting to resume
# scored and kept for training: every scored state but "dropped"
SCORED_KEPT = (GroupState.SCORED, GroupState.BATCHED, GroupState.TRAINED, GroupState.EXPIRED, GroupState.FILTERED)


class FinishReason(StrEnum):
    """How a sample's generation (or one attempt's stretch of it) ended."""

    EOS = "eos"
    LENGTH = "length"  # max_new_tokens reached
    ABORTED = "aborted"  # APRIL: a partial sample, handed back to be resumed
    DROPPED = "dropped"  # a segment whose prefix was too stale and was generated again (lineage only)


# what a Sample event may say (DROPPED is lineage's word for a segment, never on the bus)
WIRE_FINISH_REASONS = frozenset({FinishReason.EOS, FinishReason.LENGTH, FinishReason.ABORTED})


class ViewName(StrEnum):
    """The views of a prompt group (jetrl.views): strings on the wire, checked against these."""

    MAIN = "main"
    ANALOGOUS = "analogous"  # the task's rephrasing (Co-rewarding-I)
    TEACHER = "teacher"  # the EMA teacher's samples (Co-rewarding-II), never trained
