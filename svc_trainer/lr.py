"""The learning rate of each policy version (run spec `train.lr_schedule`, `lr_warmup_ratio`,
`min_lr_ratio`): a linear warm-up, then constant, linear or cosine decay, as verl's and TRL's
schedulers, counted in versions (a version's `train.minibatches` optimizer steps share its rate).

With W = round(lr_warmup_ratio · T) warm-up versions (at least 1 when the ratio is above 0) of
T = train.steps, version v (1-based) trains at
    lr · v / W                                      for v ≤ W,
    lr_min + (lr − lr_min) · f(p),  p = (v − W − 1) / max(T − W − 1, 1)   after,
with lr_min = min_lr_ratio · lr and f(p) = 1 (constant), 1 − p (linear), (1 + cos πp) / 2 (cosine):
the first version after warm-up trains at lr, the last at lr_min.
"""

from __future__ import annotations

import math

from jetrl.spec_sections import TrainSpec

__all__ = ["lr_at", "warmup_versions"]


def warmup_versions(train: TrainSpec) -> int:
    if not train.lr_warmup_ratio:
        return 0
    return max(1, round(train.lr_warmup_ratio * train.steps))


def lr_at(version: int, train: TrainSpec) -> float:
    """The rate the optimizer steps of `version` (1 … train.steps) take."""
    if not 1 <= version <= train.steps:
        raise ValueError(f"version {version} is outside 1..{train.steps}")
    warmup = warmup_versions(train)
    if version <= warmup:
        return train.lr * version / warmup
    floor = train.min_lr_ratio * train.lr
    p = (version - warmup - 1) / max(train.steps - warmup - 1, 1)
    if train.lr_schedule == "linear":
        return floor + (train.lr - floor) * (1.0 - p)
    if train.lr_schedule == "cosine":
        return floor + (train.lr - floor) * (1.0 + math.cos(math.pi * p)) / 2.0
    return train.lr
