"""The KL anchor (svc_trainer/kl.py, the loss's kl term, the train engine's reference): values and
gradients worked by hand, and a run without it unchanged."""

import copy
import math

import pytest
import torch
from pydantic import ValidationError

from jetrl.config import RunSpec
from jetrl.policy import encode_prompt
from jetrl.spec_sections import TrainSpec
from svc_rollout.api import GenRequest
from svc_rollout.engine import TorchEngine
from svc_trainer.api import TrainSample
from svc_trainer.engine import TorchTrainEngine
from svc_trainer.kl import K3_CLAMP, kl_penalties, kl_per_token, kl_reference
from svc_trainer.loss import decoupled_ppo_loss
from tiny_models import TOK, spread_model

# θ = log π_θ(t) = −1.0, ref = log π_ref(t) = −1.5, so r = ref − θ = −0.5
HAND = {
    # estimator: (value, d value / dθ)
    "k1": (0.5, 1.0),  # −r; d(θ − ref)/dθ = 1
    "k2": (0.125, 0.5),  # r²/2; d/dθ = −r = 0.5
    "k3": (math.exp(-0.5) + 0.5 - 1.0, 1.0 - math.exp(-0.5)),  # e^r − 1 − r; d/dθ = −e^r + 1
}


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_each_estimator_value_and_gradient_by_hand(estimator):
    theta = torch.tensor([[-1.0]], requires_grad=True)
    kl = kl_per_token(theta, torch.tensor([[-1.5]]), estimator)
    kl.sum().backward()
    value, grad = HAND[estimator]
    assert float(kl.detach()) == pytest.approx(value, abs=1e-6) and float(theta.grad) == pytest.approx(grad, abs=1e-6)


def test_k3_is_never_negative_and_clamped():
    theta = torch.tensor([[-1.0, -1.0, -30.0]])
    kl = kl_per_token(theta, torch.tensor([[-1.0, -3.0, -1.0]]), "k3")
    assert float(kl[0, 0]) == 0.0 and float(kl[0, 1]) > 0 and float(kl[0, 2]) == K3_CLAMP


def test_k3_is_not_negative_in_float32_when_the_two_log_probs_nearly_agree():
    """e^r − 1 − r cancels to a few float32 ulps of the wrong sign when r is tiny (the rollout's
    and the trainer's numerics differ by 1e-7 to 1e-3): a version trained from the reference
    itself reported a negative KL (tests/e2e/test_kl_run.py, 1 run in about 10 under load)."""
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(4000, generator=gen) * 0.5 - 2.0
    for scale in (1e-3, 1e-5, 1e-7):
        ref = theta + torch.randn(4000, generator=gen) * scale
        assert float(kl_per_token(theta, ref, "k3").min()) >= 0.0


def loss(kl=None, kl_coef=0.0):
    """Two kept tokens and a padding one, on-policy (θ = p = b), advantages 0: only the KL acts."""
    theta = torch.tensor([[-1.0, -2.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    ref = torch.tensor([[-1.5, -2.0, 0.0]])
    k = kl_per_token(theta, ref, "k3") if kl else None
    out = decoupled_ppo_loss(theta, theta.detach(), theta.detach(), torch.zeros(1, 3), mask, kl=k, kl_coef=kl_coef)
    out.loss.backward()
    return out, theta.grad


def test_the_loss_adds_beta_times_the_token_mean_kl_and_its_gradient():
    out, grad = loss(kl=True, kl_coef=0.1)
    k3, dk3 = HAND["k3"]
    # token mean over the two kept tokens: the second has θ == ref, so KL 0 and gradient 0
    assert float(out.loss.detach()) == pytest.approx(0.1 * k3 / 2, abs=1e-7)
    assert grad[0].tolist() == pytest.approx([0.1 * dk3 / 2, 0.0, 0.0], abs=1e-7)
    assert out.metrics["kl"] == pytest.approx(k3 / 2, abs=1e-7)


def test_a_zero_coefficient_changes_nothing():
    plain, plain_grad = loss()
    zero, zero_grad = loss(kl=True, kl_coef=0.0)
    assert float(plain.loss.detach()) == float(zero.loss.detach()) and torch.equal(plain_grad, zero_grad)


def samples(model):
    engine = TorchEngine(copy.deepcopy(model).eval(), TOK)
    prompts = [encode_prompt(TOK, p) for p in ("12+34=", "7-5=")]
    results = engine.generate([GenRequest(p, 5, temperature=1.0, seed=i) for i, p in enumerate(prompts)])
    return [TrainSample(p, r.token_ids, r.logprobs, a) for p, r, a in zip(prompts, results, (1.0, -1.0))]


def test_the_engine_anchors_to_its_reference_and_kl_coef_0_keeps_no_reference():
    model = spread_model()
    batch = samples(model)
    same = TorchTrainEngine(copy.deepcopy(model), TrainSpec(kl_coef=0.5), reference=copy.deepcopy(model).eval())
    assert same.train_step(batch)["kl"] == pytest.approx(0.0, abs=1e-6)  # the reference is the policy
    other = TorchTrainEngine(copy.deepcopy(model), TrainSpec(kl_coef=0.5), reference=spread_model(seed=7).eval())
    assert other.train_step(batch)["kl"] > 0.01
    plain = TorchTrainEngine(copy.deepcopy(model), TrainSpec(), reference=spread_model(seed=7))
    assert plain.reference is None and "kl" not in plain.train_step(batch)
    with pytest.raises(ValueError, match="needs a reference model"):
        TorchTrainEngine(copy.deepcopy(model), TrainSpec(kl_coef=0.5))


def test_the_teacher_as_reference_needs_a_teacher():
    with pytest.raises(ValidationError, match="kl_reference teacher needs a `teacher:` section"):
        RunSpec.model_validate(
            {"name": "k", "model": {"path": "m"}, "train": {"kl_coef": 0.01, "kl_reference": "teacher"}}
        )


# behaviour log-probs [−1.0, −2.0], the reference's [−1.5, −1.0]: r = ref − behaviour = [−0.5, 1.0]
BY_HAND_SUMS = {
    "k1": 0.5 - 1.0,  # Σ −r
    "k2": 0.125 + 0.5,  # Σ r²/2
    "k3": (math.exp(-0.5) + 0.5 - 1.0) + (math.e - 2.0),  # Σ e^r − 1 − r
}


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_the_reward_penalty_is_beta_times_the_sum_over_real_tokens_by_hand(estimator):
    behaviour = torch.tensor([[-1.0, -2.0], [-1.0, 0.0]])
    reference = torch.tensor([[-1.5, -1.0], [-1.5, 5.0]])
    real = torch.tensor([[True, True], [True, False]])  # the second row's second token is padding
    penalties, mean = kl_penalties(behaviour, reference, real, estimator, coef=0.1)
    first_token = HAND[estimator][0]
    assert penalties == pytest.approx([0.1 * BY_HAND_SUMS[estimator], 0.1 * first_token])
    assert mean == pytest.approx((BY_HAND_SUMS[estimator] + first_token) / 3)


def test_kl_in_reward_keeps_the_reference_out_of_the_engine_and_in_the_trainer():
    spec = RunSpec.model_validate({"name": "k", "model": {"path": "m"}, "train": {"kl_coef": 0.1, "kl_in": "reward"}})
    assert kl_reference(spec, spread_model(), use="loss") is None
    teacher = spread_model()
    with_teacher = spec.model_copy(update={"train": spec.train.model_copy(update={"kl_reference": "teacher"})})
    assert kl_reference(with_teacher, teacher, use="reward") is teacher
    engine = TorchTrainEngine(spread_model(), spec.train)  # no reference: its loss has no KL term
    assert engine.reference is None and "kl" not in engine.train_step(samples(spread_model()))
