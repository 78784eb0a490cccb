"""Group-relative advantage estimators (docs/design.md §5), one reward list per view of a prompt group.

Plain Python on lists: groups are small and the results go straight into protobuf events.
Every estimator gives 0 to a group of one and to a group whose rewards are all equal, since
such groups carry no signal about which sample was better. `mc_grpo` marks its pivot sample
None: it is excluded from the gradient (and from the token-mean), not merely given 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

__all__ = ["grpo", "dr_grpo", "rloo", "mc_grpo", "ESTIMATORS", "compute"]


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


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def mc_grpo(rewards: Sequence[float], scale: str = "std") -> list[float | None]:
    """MC-GRPO on G+1 samples: baseline = the median reward; the one pivot sample at the median
    (the middle of a stable sort by reward, so ties go to the lowest index) gets no gradient.

    scale "std": (r_i - median) / (unbiased std of all G+1 + 1e-6);
    scale "mad": (r_i - median) / (median |r_j - median| + 1e-3), the reference code's choice;
    mind that with binary rewards the MAD is 0 whenever a majority agrees, so its advantages
    are then ±1000.
    """
    n = len(rewards)
    if n % 2 == 0:
        raise ValueError(f"mc_grpo needs an odd number of samples (G+1), got {n}")
    pivot = sorted(range(n), key=lambda i: (rewards[i], i))[n // 2]
    base = rewards[pivot]
    if scale == "std":
        m = _mean(rewards)
        denom = (math.sqrt(sum((r - m) ** 2 for r in rewards) / (n - 1)) if n > 1 else 0.0) + 1e-6
    elif scale == "mad":
        denom = _median([abs(r - base) for r in rewards]) + 1e-3
    else:
        raise ValueError(f"unknown mc_grpo scale {scale!r}; choose std or mad")
    return [None if i == pivot else (r - base) / denom for i, r in enumerate(rewards)]


ESTIMATORS: dict[str, Callable[..., Sequence[float | None]]] = {
    "grpo": grpo,
    "dr_grpo": dr_grpo,
    "rloo": rloo,
    "mc_grpo": mc_grpo,
}


def compute(name: str, rewards: Sequence[float], *, mc_scale: str = "std") -> Sequence[float | None]:
    """Advantages of one group of rewards with the estimator a run spec names (None: excluded)."""
    try:
        estimator = ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown advantage estimator {name!r}; choose one of {sorted(ESTIMATORS)}") from None
    return estimator(rewards, mc_scale) if name == "mc_grpo" else estimator(rewards)
