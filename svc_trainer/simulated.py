"""SIMULATED training hardware, for benchmarks of the pipeline's scheduling (run spec `simulation`).

Nothing here trains. `SimulatedTrainEngine` stands in for GPUs that are not there: it spends the
time a real update would take, by a cost model, and leaves the weights as they are, so a benchmark
can measure how staleness, over-provisioning and interruption shape throughput without the
hardware. The model is the run's real (tiny) checkpoint, kept only so that every version still
publishes real weights through the real path (files, gRPC, announcements).
"""

from __future__ import annotations

from collections.abc import Sequence
from time import sleep

import torch
from transformers import PreTrainedModel

from jetrl.spec_sections import SimulationSpec, TrainSpec
from svc_trainer.api import TrainSample
from svc_trainer.engine import InProcess

__all__ = ["SimulatedTrainEngine"]


class SimulatedTrainEngine(InProcess):
    """Simulated hardware: the TorchTrainEngine interface the trainer uses, without training.

    `train_step` sleeps `sim.train_s_per_step` per optimizer step a real engine would take
    (`train.minibatches`, fewer if the batch has fewer samples) plus `sim.train_s_per_token` per
    trainable completion token, and returns the real engine's metric keys. Only "tokens" (the
    trainable tokens) is counted; the loss metrics are NOT computed, they are fixed placeholders
    (loss 0, clip and masked fractions 0, mean_w 1, grad_norm 0).
    """

    def __init__(self, model: PreTrainedModel, train_spec: TrainSpec, sim: SimulationSpec):
        self.model = model
        self.spec = train_spec
        self.sim = sim
        # A real, never-stepped AdamW: its (empty) state saves and restores through the same
        # trainer checkpoint as a real engine's.
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=train_spec.lr, weight_decay=train_spec.weight_decay)

    def train_step(self, samples: Sequence[TrainSample], lr: float | None = None) -> dict[str, float]:
        """Sleep for the modelled duration of one version's update; the weights do not change (so
        the rate does not matter)."""
        if not samples:
            raise ValueError("train_step needs at least one sample")
        tokens = sum(
            len(s.completion_token_ids) if s.trainable is None else sum(map(bool, s.trainable)) for s in samples
        )
        steps = min(self.spec.minibatches, len(samples))
        sleep(self.sim.train_s_per_step * steps + self.sim.train_s_per_token * tokens)
        return {
            "loss": 0.0,
            "tokens": float(tokens),
            "clip_fraction": 0.0,
            "masked_fraction": 0.0,
            "mean_w": 1.0,
            "grad_norm": 0.0,
            "entropy": 0.0,  # no distribution is computed
        }
