"""Group-relative advantage estimators (DESIGN §5), one reward list per view of a prompt group.

Plain Python on lists: groups are small and the results go straight into protobuf events.
Every estimator gives 0 to a group of one and to a group whose rewards are all equal, since
such groups carry no signal about which sample was better.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

__all__ = ["grpo", "dr_grpo", "rloo", "ESTIMATORS", "compute"]


def _mean(r: Sequence[float]) -> float:
    return sum(r) / len(r)


def grpo(rewards: Sequence[float]) -> list[float]:
    """GRPO: (r_i - mean) / (unbiased std + 1e-6)."""
    g = len(rewards)
    if g < 2:
        return [0.0] * g
    m = _mean(rewards)
    std = math.sqrt(sum((r - m) ** 2 for r in rewards) / (g - 1))
    return [(r - m) / (std + 1e-6) for r in rewards]


def dr_grpo(rewards: Sequence[float]) -> list[float]:
    """Dr. GRPO: r_i - mean (no std scaling, which biases towards easy and hard prompts)."""
    if not rewards:
        return []
    m = _mean(rewards)
    return [r - m for r in rewards]


def rloo(rewards: Sequence[float]) -> list[float]:
    """REINFORCE leave-one-out: r_i - mean of the other G-1 rewards."""
    g = len(rewards)
    if g < 2:
        return [0.0] * g
    total = sum(rewards)
    return [r - (total - r) / (g - 1) for r in rewards]


ESTIMATORS: dict[str, Callable[[Sequence[float]], list[float]]] = {"grpo": grpo, "dr_grpo": dr_grpo, "rloo": rloo}


def compute(name: str, rewards: Sequence[float]) -> list[float]:
    """Advantages of one group of rewards with the estimator a run spec names."""
    try:
        estimator = ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown advantage estimator {name!r}; choose one of {sorted(ESTIMATORS)}") from None
    return estimator(rewards)
