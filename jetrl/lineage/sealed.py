"""A sealed batch built from what the scheduler recorded, instead of read back from lineage.

`Batches.load_batch` reads a sealed batch's groups, samples and reward rows back: on the bench
(32 groups of 8) ~20 ms of the scheduler's CPU and ~12 ms of Postgres's per version, for rows the
scheduler wrote moments before. When the scheduler still holds, for every group of the batch, the
group as it published it to the reward stage (lineage's own reading of it) and the scored event
whose rewards that transaction wrote (`ScoredFetch.moved`), it builds the batch from them here,
field for field as `load_batch` would read it; any group it does not hold (a restart, a group
scored twice in one fetch) and the batch is read back as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

from jetrl.lineage.batches import Scored, scored_message, scored_rows
from jetrl.v1 import events_pb2

__all__ = ["sealed_batch"]


def _sealed_group(group: events_pb2.PromptGroup, scored: events_pb2.ScoredGroup, step: int) -> events_pb2.ScoredGroup:
    """`group` scored by `scored`, as `load_batch` reads it once sealed at `step`."""
    reward_rows: list[dict] = []
    sample_rewards: list[tuple[str, float]] = []
    moves: list[tuple[str, str, str, str | None]] = []
    scored_rows(Scored(scored), reward_rows, sample_rewards, moves)  # what record_scored_groups wrote
    [(_, _, group_server, _)] = moves
    scores: dict[str, SimpleNamespace] = {}
    # a sample's row of the server named first, else the first by name: load_batch's ORDER BY; a
    # second row under one (sample, server) key was never stored, and would sort after the first
    for row in sorted(reward_rows, key=lambda r: (r["sample_id"], r["server"] != group_server, r["server"])):
        scores.setdefault(row["sample_id"], SimpleNamespace(**row))
    rewards = dict(sample_rewards)
    sealed = events_pb2.PromptGroup()
    sealed.CopyFrom(group)
    sealed.step = step
    # context-only samples (the teacher's) have no reward: 0, as load_batch reads them
    return scored_message(sealed, {s.sample_id: rewards.get(s.sample_id) or 0.0 for s in group.samples}, scores)


def sealed_batch(
    run_id: str,
    batch_id: str,
    step: int,
    groups: Sequence[tuple[events_pb2.PromptGroup, events_pb2.ScoredGroup]],
) -> events_pb2.Batch:
    """Batch `step` of `groups` (in admission order: each as published to the reward stage, and
    the scored event lineage recorded for it), as `load_batch` reads it back."""
    return events_pb2.Batch(
        run_id=run_id,
        batch_id=batch_id,
        step=step,
        policy_version=step,
        groups=[_sealed_group(group, scored, step) for group, scored in groups],
    )
