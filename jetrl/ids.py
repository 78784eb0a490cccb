"""Every id and message id in jetrl, minted and parsed here only.

Exactly-once rests on these being deterministic: a restarted producer mints the same id for the
same decision, and JetStream drops the second publish of a message id within its duplicate
window (jetrl.bus.topology.DUPLICATE_WINDOW_S); lineage rows are keyed by the same ids.
"""

from __future__ import annotations

__all__ = [
    "group_id",
    "group_number",
    "batch_id",
    "sample_id",
    "task_msg_id",
    "rollout_msg_id",
    "abort_msg_id",
    "end_msg_id",
    "eval_msg_id",
    "weights_msg_id",
    "teacher_msg_id",
    "dead_letter_msg_id",
    "dead_letter_id",
]

_MAIN_VIEW = "main"  # jetrl.views.MAIN (not imported: ids depend on nothing)


def group_id(run_id: str, n: int) -> str:
    """Group n of a run (n in admission order)."""
    return f"{run_id}.g{n:06d}"


def group_number(group: str) -> int:
    """n of `<run>.g<n>`."""
    return int(group.rsplit(".g", 1)[1])


def batch_id(run_id: str, step: int) -> str:
    """The batch of step `step`, which version `step` trains into `step + 1`."""
    return f"{run_id}.b{step:06d}"


def sample_id(group: str, index: int) -> str:
    return f"{group}.{index}"


def task_msg_id(group: str, attempt: int, view: str = _MAIN_VIEW) -> str:
    """A group's task for one view and attempt (attempt 0: the first; later ones resume it)."""
    base = group if view in (_MAIN_VIEW, "") else f"{group}.{view}"
    return base if attempt == 0 else f"{base}.r{attempt}"


def rollout_msg_id(group: str, attempt: int, view: str = _MAIN_VIEW) -> str:
    """What one task attempt generated: one Rollout per attempt of a view, so a redelivered task's
    is dropped as a duplicate and a later attempt's (which resumes other samples) never is."""
    return f"{task_msg_id(group, 0, view)}.a{attempt}"


def abort_msg_id(first: tuple[str, int]) -> str:
    """An ABORT, named for the first (group, attempt) it stops."""
    return f"{first[0]}.abort{first[1]}"


def end_msg_id(run_id: str, completed: bool) -> str:
    """The control event that tells every worker a run ended."""
    return f"{run_id}.{'completed' if completed else 'stopped'}"


def eval_msg_id(run_id: str, version: int) -> str:
    """An evaluation request of `version`, and its result."""
    return f"{run_id}.e{version}"


def weights_msg_id(run_id: str, version: int) -> str:
    return f"{run_id}.v{version}"


def teacher_msg_id(run_id: str, version: int) -> str:
    return f"{run_id}.t{version}"


def dead_letter_msg_id(stream: str, seq: int) -> str:
    """A message dead-lettered from `stream` at sequence `seq`."""
    return f"dlq:{stream}:{seq}"


def dead_letter_id(run_id: str, dlq_seq: int) -> str:
    """Key of a dead letter in lineage: the DLQ stream sequence alone repeats across NATS servers and runs."""
    return f"{run_id}:{dlq_seq}"
