"""The train engine's seam: what the trainer's batch worker asks of an engine, and nothing else.
The torch engine (svc_trainer/engine.py) and the simulated one (svc_trainer/simulated.py)
implement it; a new engine implements it too (docs/howto/add-an-engine.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import PreTrainedModel

__all__ = ["TrainSample", "TrainEngine"]


@dataclass(frozen=True)
class TrainSample:
    """One completion to train on; `logprobs` are its behaviour log-probs, one per completion token.

    `trainable` masks tokens out of the loss, one flag per completion token (None: all trainable);
    the trainer sets it from the staleness bound (svc_trainer.staleness). A sample with no
    trainable token still belongs to the batch but contributes no gradient.
    """

    prompt_token_ids: Sequence[int]
    completion_token_ids: Sequence[int]
    logprobs: Sequence[float]
    advantage: float
    trainable: Sequence[bool] | None = None
    fresh: Sequence[bool] | None = None
    """Per completion token: made by the very weights being trained (the proximal policy), so
    its behaviour log-prob and the trainer's should agree; the gap between them measures how far
    the generation engine's numerics are from the trainer's (metrics logprob_gap_*)."""


class TrainEngine(Protocol):
    """One decoupled-PPO update per policy version, on the model it owns.

    `model` holds the weights the trainer publishes after each step (and the EMA teacher follows);
    `optimizer`'s state_dict is what a restart restores.
    """

    # read-only to the trainer, so an engine may hold a subclass (AdamW, a model class)
    @property
    def model(self) -> PreTrainedModel: ...

    @property
    def optimizer(self) -> torch.optim.Optimizer: ...

    def train_step(self, samples: Sequence[TrainSample]) -> dict[str, float]:
        """Train one version on the batch's samples; the step's metrics (loss, clip fraction,
        gradient norm, tokens, ...), every value a float."""
