"""Label-free rewards by agreement (docs/design.md §6): `majority` (self-consistency, TTRL), `co_reward`
(Co-rewarding-I) and `teacher` (Co-rewarding-II), as pure functions of the completions' texts.

The answer rule, shared by all three:
1. A completion's answer is its last number, or the last one after its last `####`
   (`jetrl.tasks.answers`, as held-out accuracy reads it); commas dropped.
2. Answers are compared as exact values, written canonically (`str(Fraction)`): `1,000`,
   `1000.0` and `1000` are all the answer `1000`, `2.50` is `5/2`.
3. A completion without a number has no answer: it never wins a vote and never earns a reward.
4. The majority answer is the most frequent one; a tie goes to the numerically smallest of the
   tied answers, so the same votes always give the same label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jetrl.tasks.answers import answer_of, majority_answer

__all__ = ["Vote", "majority_rewards", "label_rewards", "co_rewards"]


@dataclass(frozen=True)
class Vote:
    """Rewards of one view's samples against a pseudo-label, with what was read from each."""

    rewards: list[float]
    answers: list[str | None]
    label: str | None  # the pseudo-label they were scored against


def _against(texts: Sequence[str], label: str | None) -> Vote:
    answers = [answer_of(t) for t in texts]
    return Vote([float(a is not None and a == label) for a in answers], answers, label)


def majority_rewards(texts: Sequence[str]) -> Vote:
    """Reward 1 for agreeing with the group's own majority answer, else 0."""
    return _against(texts, majority_answer([answer_of(t) for t in texts]))


def label_rewards(texts: Sequence[str], labellers: Sequence[str]) -> Vote:
    """Reward 1 for agreeing with the majority answer of other samples of the same question (the
    EMA teacher's, for Co-rewarding-II)."""
    return _against(texts, majority_answer([answer_of(t) for t in labellers]))


def co_rewards(texts: Sequence[str], other_view: Sequence[str]) -> tuple[Vote, Vote]:
    """Co-rewarding-I: each view's samples are scored against the majority answer of the OTHER
    view (the analogous rephrasing of the same question), so a view cannot reward its own habit."""
    return label_rewards(texts, other_view), label_rewards(other_view, texts)
