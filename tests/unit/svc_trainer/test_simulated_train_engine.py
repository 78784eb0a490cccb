"""SimulatedTrainEngine (svc_trainer/simulated.py): spends the modelled time, changes no weight.

The sleep is monkeypatched and recorded: the tests check the modelled seconds, not the wall clock.
"""

import pytest
import torch

import svc_trainer.simulated
from jetrl.policy import make_char_tokenizer, make_tiny_model
from jetrl.spec_sections import SimulationSpec, TrainSpec
from svc_trainer.api import TrainSample
from svc_trainer.engine import TorchTrainEngine
from svc_trainer.simulated import SimulatedTrainEngine

TOK = make_char_tokenizer()
SIM = SimulationSpec(train_s_per_token=0.001, train_s_per_step=0.5)


@pytest.fixture
def slept(monkeypatch):
    """The seconds each sleep was asked for (and no real sleeping)."""
    calls = []
    monkeypatch.setattr(svc_trainer.simulated, "sleep", calls.append)
    return calls


def make_model():
    return make_tiny_model(TOK, hidden_size=16, layers=1, heads=2, intermediate_size=32, max_positions=32, seed=0)


def batch():
    """Three samples with 3 + 2 + 0 trainable tokens."""
    return [
        TrainSample([1, 5], [6, 7, 8], [-1.0, -1.0, -1.0], 1.0),  # trainable None: all 3
        TrainSample([1, 5], [6, 7, 8, 9], [-1.0] * 4, -1.0, trainable=[False, True, True, False]),  # 2
        TrainSample([1, 6], [7, 8], [-1.0, -1.0], 0.5, trainable=[False, False]),  # all stale: 0
    ]


def test_sleeps_the_modelled_time_per_optimizer_step_and_trainable_token(slept):
    engine = SimulatedTrainEngine(make_model(), TrainSpec(minibatches=2), SIM)
    metrics = engine.train_step(batch())
    # 2 optimizer steps × 0.5 s + 5 trainable tokens × 0.001 s = 1.005 s
    assert slept == [pytest.approx(1.005)]
    assert metrics["tokens"] == 5


def test_no_more_optimizer_steps_than_samples(slept):
    engine = SimulatedTrainEngine(make_model(), TrainSpec(minibatches=4), SIM)
    engine.train_step(batch()[:1])
    # one sample, one minibatch: 0.5 s + 3 tokens × 0.001 s
    assert slept == [pytest.approx(0.503)]


def test_weights_do_not_change(slept):
    engine = SimulatedTrainEngine(make_model(), TrainSpec(lr=1.0), SIM)
    before = [p.detach().clone() for p in engine.model.parameters()]
    engine.train_step(batch())
    for p0, p1 in zip(before, engine.model.parameters()):
        assert torch.equal(p0, p1)


def test_metric_keys_are_those_of_the_real_engine(slept):
    real = TorchTrainEngine(make_model(), TrainSpec()).train_step(batch())
    simulated = SimulatedTrainEngine(make_model(), TrainSpec(), SIM).train_step(batch())
    assert set(simulated) == set(real)
    assert simulated["tokens"] == real["tokens"] == 5  # the one metric the simulation counts


def test_optimizer_state_round_trips_like_the_real_one():
    state = SimulatedTrainEngine(make_model(), TrainSpec(), SIM).optimizer.state_dict()
    fresh = SimulatedTrainEngine(make_model(), TrainSpec(), SIM)
    fresh.optimizer.load_state_dict(state)
    assert fresh.optimizer.state_dict() == state


def test_empty_batch_is_an_error():
    with pytest.raises(ValueError, match="at least one sample"):
        SimulatedTrainEngine(make_model(), TrainSpec(), SIM).train_step([])
