"""What the scheduler and the trainer agree a batch is: a digest of what training takes from it.

The trainer gets a batch from the bus, where a publisher other than the scheduler could have put
it (docs/security.md); before training it asks the scheduler for the digest of the batch lineage
sealed under that id (SchedulerService.GetBatchDigest) and trains only on an exact match. The
digest covers ids, tokens, behaviour log-probs, token versions, prefix lengths, views and rewards,
in order: everything the loss reads. Reward details and the name of the server that scored a
group are left out: they train nothing, and lineage may list several servers' rows in any order.
"""

from __future__ import annotations

import hashlib

from jetrl.v1 import events_pb2

__all__ = ["batch_digest"]


def batch_digest(batch: events_pb2.Batch) -> str:
    """The hex sha256 of the batch's training content (the same bytes for the same content)."""
    kept = events_pb2.Batch(
        run_id=batch.run_id, batch_id=batch.batch_id, step=batch.step, policy_version=batch.policy_version
    )
    for scored in batch.groups:
        group = scored.group
        kept.groups.add(
            group=events_pb2.PromptGroup(
                run_id=group.run_id,
                group_id=group.group_id,
                views=group.views,
                samples=[
                    events_pb2.Sample(
                        sample_id=s.sample_id,
                        index=s.index,
                        prompt_token_ids=s.prompt_token_ids,
                        completion_token_ids=s.completion_token_ids,
                        logprobs=s.logprobs,
                        token_versions=s.token_versions,
                        prefix_len=s.prefix_len,
                        view=s.view,
                    )
                    for s in group.samples
                ],
            ),
            rewards=scored.rewards,
        )
    return hashlib.sha256(kept.SerializeToString(deterministic=True)).hexdigest()
