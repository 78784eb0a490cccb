"""What the reward stage accepts of a Score reply: every score matched to its sample by
`sample_id`, every reward a finite number within the run's bound (`reward.max_abs_reward`).

A reply that breaks either is a failed call (`BadReply`), handled like a server that did not
answer: retried, then the run's `reward.on_failure`. So a shuffled reply is put back in order, and a
NaN or a 1e30 never reaches training or lineage as a reward (nor becomes a scored event that fails
validation and is dead-lettered, which stalled the run).

A server older than the id check may leave every `sample_id` empty: its reply is matched by
position, as contract version 1 always read it. A reply that names some samples and not others is
refused: neither its ids nor its order can be trusted.
"""

from __future__ import annotations

import math
from collections import Counter

from jetrl.v1 import reward_pb2

__all__ = ["BadReply", "match_scores"]


class BadReply(ValueError):
    """A Score reply the stage cannot use; the message says what the server sent and what it should."""


def _ids(ids: list[str]) -> str:
    return ", ".join(repr(i) for i in ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def _by_id(sent: list[str], scores: list[reward_pb2.SampleScore]) -> list[reward_pb2.SampleScore]:
    ids = [s.sample_id for s in scores]
    if unnamed := ids.count(""):
        raise BadReply(
            f"{unnamed} of {len(ids)} scores name no sample_id: name the sample of every score "
            "(a reply naming none is matched by position)"
        )
    if twice := [i for i, n in Counter(ids).items() if n > 1]:
        raise BadReply(f"more than one score for sample {_ids(twice)}: one score per sample")
    known = set(sent)
    if unknown := [i for i in ids if i not in known]:
        raise BadReply(f"scores for samples not in the request: {_ids(unknown)}")
    by_id = {s.sample_id: s for s in scores}
    if missing := [i for i in sent if i not in by_id]:
        raise BadReply(f"no score for {len(missing)} of {len(sent)} samples: {_ids(missing)}")
    return [by_id[i] for i in sent]


def match_scores(
    request: reward_pb2.ScoreRequest, reply: reward_pb2.ScoreResponse, max_abs_reward: float
) -> tuple[list[reward_pb2.SampleScore], bool]:
    """The reply's scores in the order of the samples of `request.views[0]`, and whether they were
    matched by position (a reply naming no sample); BadReply when the reply cannot be used."""
    sent = [s.sample_id for s in request.views[0].samples]
    scores = list(reply.scores)
    by_position = not any(s.sample_id for s in scores)
    if by_position and len(scores) != len(sent):
        raise BadReply(f"{len(scores)} scores for {len(sent)} samples: one each")
    ordered = scores if by_position else _by_id(sent, scores)
    for sample_id, score in zip(sent, ordered):
        if not math.isfinite(score.reward):
            raise BadReply(f"reward {score.reward} for sample {sample_id!r}: every reward must be a finite number")
        if abs(score.reward) > max_abs_reward:
            raise BadReply(
                f"reward {score.reward:g} for sample {sample_id!r} is beyond the run's bound "
                f"(reward.max_abs_reward: {max_abs_reward:g})"
            )
    return ordered, by_position
