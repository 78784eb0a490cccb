"""The learning rate per policy version (svc_trainer/lr.py), worked by hand."""

import math

import pytest
import torch

from jetrl.spec_sections import TrainSpec
from svc_trainer.api import TrainSample
from svc_trainer.engine import TorchTrainEngine
from svc_trainer.lr import lr_at
from tiny_models import spread_model


def rates(**train) -> list[float]:
    spec = TrainSpec.model_validate({"lr": 1.0, "steps": 10, **train})
    return [lr_at(v, spec) for v in range(1, 11)]


def test_constant_without_warm_up_is_the_rate_of_every_version():
    assert rates() == [1.0] * 10


def test_a_warm_up_climbs_linearly_then_the_cosine_falls_from_lr_to_the_floor():
    # W = round(0.2 * 10) = 2 warm-up versions: 1/2, 1; then p = (v - 3) / 7 for v = 3..10
    got = rates(lr_schedule="cosine", lr_warmup_ratio=0.2, min_lr_ratio=0.1)
    want = [0.5, 1.0] + [0.1 + 0.9 * (1 + math.cos(math.pi * k / 7)) / 2 for k in range(8)]
    assert got == pytest.approx(want)
    assert got[2] == pytest.approx(1.0) and got[-1] == pytest.approx(0.1)


def test_linear_decay_reaches_the_floor_at_the_last_version():
    assert rates(lr_schedule="linear") == pytest.approx([1 - k / 9 for k in range(10)])


def test_a_tiny_warm_up_ratio_still_warms_up_one_version_and_versions_outside_the_run_are_refused():
    assert rates(lr_warmup_ratio=0.01)[:2] == [1.0, 1.0]  # W = 1: version 1 at lr / 1
    with pytest.raises(ValueError, match="outside 1..10"):
        lr_at(11, TrainSpec(steps=10))


def test_the_torch_engine_trains_at_the_rate_it_is_given():
    sample = TrainSample([1, 5, 6], [7, 8], [-1.0, -1.0], 1.0)
    frozen = TorchTrainEngine(spread_model(), TrainSpec(lr=0.1))
    before = [p.detach().clone() for p in frozen.model.parameters()]
    frozen.train_step([sample], lr=0.0)
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.model.parameters()))
    frozen.train_step([sample])  # None: train.lr
    assert frozen.optimizer.param_groups[0]["lr"] == 0.1
    assert not all(torch.equal(a, b) for a, b in zip(before, frozen.model.parameters()))
