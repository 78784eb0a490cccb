"""The trainer's measure of the generation engine's numerics: |behaviour - proximal| log-prob over
fresh tokens (made by the weights being trained), reported as logprob_gap_mean and _max."""

import copy

import pytest

from jetrl.policy import encode_prompt
from jetrl.spec_sections import TrainSpec
from svc_rollout.api import GenRequest
from svc_rollout.engine import TorchEngine
from svc_trainer.api import TrainSample
from svc_trainer.engine import TorchTrainEngine
from tiny_models import TOK, spread_model


def samples(model, shift: float = 0.0, fresh_rows=(True, True, True)):
    """Three samples from the torch rollout engine on `model`, their behaviour log-probs shifted by
    `shift`, and `fresh` per sample as given."""
    engine = TorchEngine(copy.deepcopy(model).eval(), TOK)
    prompts = [encode_prompt(TOK, p) for p in ("12+34=", "7-5=", "1+1=")]
    results = engine.generate([GenRequest(p, 6, temperature=1.0, seed=i) for i, p in enumerate(prompts)])
    return [
        TrainSample(p, r.token_ids, [lp + shift for lp in r.logprobs], 1.0, fresh=[f] * len(r.token_ids))
        for p, r, f in zip(prompts, results, fresh_rows)
    ]


@pytest.mark.parametrize("minibatches", [1, 3])
def test_the_same_weights_show_no_gap_and_a_shift_shows_as_itself(minibatches):
    model = spread_model()
    same = TorchTrainEngine(copy.deepcopy(model), TrainSpec(minibatches=minibatches)).train_step(samples(model))
    assert same["logprob_gap_max"] < 1e-5
    shifted = TorchTrainEngine(copy.deepcopy(model), TrainSpec(minibatches=minibatches)).train_step(
        samples(model, shift=-0.25)
    )
    assert shifted["logprob_gap_mean"] == pytest.approx(0.25, abs=1e-4)
    assert shifted["logprob_gap_max"] == pytest.approx(0.25, abs=1e-4)


def test_only_fresh_tokens_count_and_none_fresh_reports_nothing():
    model = spread_model()
    mixed = samples(model, shift=-0.25, fresh_rows=(True, False, False))
    assert TorchTrainEngine(copy.deepcopy(model), TrainSpec()).train_step(mixed)["logprob_gap_mean"] == pytest.approx(
        0.25, abs=1e-4
    )
    stale = samples(model, fresh_rows=(False, False, False))
    metrics = TorchTrainEngine(copy.deepcopy(model), TrainSpec()).train_step(stale)
    assert "logprob_gap_mean" not in metrics and "logprob_gap_max" not in metrics
