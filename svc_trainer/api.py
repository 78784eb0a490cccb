"""The train engine's seam: what the trainer's batch worker asks of an engine, and nothing else.
The torch engine (svc_trainer/engine.py), the simulated one (svc_trainer/simulated.py) and
DeepSpeed's (svc_trainer/deepspeed_engine.py) implement it; a new engine implements it too
(docs/howto/add-an-engine.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

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
    """One decoupled-PPO update per policy version, on weights it owns (in this process, or
    spread over DeepSpeed ranks).

    After each step the trainer asks for the version's files (`save_weights`), then for what a
    restart needs besides them (`save_state`: a small record the trainer state stores atomically
    with the version). A restarted trainer builds the engine from that version's exact weights and
    hands it the record (`load_state`).
    """

    def train_step(self, samples: Sequence[TrainSample], lr: float | None = None) -> dict[str, float]:
        """Train one version on the batch's samples at learning rate `lr` (svc_trainer/lr.py; None:
        train.lr); the step's metrics (loss, clip fraction, gradient norm, tokens, ...), every value
        a float."""

    def save_weights(self, path: Path, dtype: torch.dtype | None, shard_bytes: int) -> Path:
        """The full weights as a version at `path` in `dtype` (None: float32), laid out by
        svc_trainer.checkpoint.save_weights; returns the file, or the shards' index."""

    def save_state(self, version: int) -> dict[str, Any]:
        """Persist the optimizer state of `version`; returns the record `load_state` takes (stored
        in the trainer state, so it must be small: a state dict, or where a checkpoint lies)."""

    def load_state(self, record: dict[str, Any]) -> None:
        """Restore what `save_state` recorded (the weights are already the version's)."""

    def close(self) -> None:
        """Release the engine's processes and memory (the run is over, or the trainer stops)."""
