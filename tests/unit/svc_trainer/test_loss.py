"""AReaL's decoupled PPO-clip loss (svc_trainer/loss.py, docs/design.md §5) against hand-worked values.

Per token: u = exp(θ - p), w = exp(p - b), loss_t = -w · min(u·A, clip(u, 1-ε_low, 1+ε_high)·A);
tokens with w > cap are masked. Inputs below are built from logs of round numbers so that u and w
are the numbers written in the comments. The mask given to the loss marks the tokens to train:
real tokens within the staleness bound.
"""

import math

import pytest
import torch

from svc_trainer.loss import LossOutput, decoupled_ppo_loss
from svc_trainer.staleness import token_staleness

LN = math.log


def _t(values, requires_grad=False):
    return torch.tensor([values], dtype=torch.float64, requires_grad=requires_grad)


def _table():
    """One resumed sample of six tokens plus one pad, covering the stale / cap / clip cases.

    Trained at version S = 3 with η = 2, ε_low = ε_high = 0.2, cap 5. The mask is what the trainer
    passes: real tokens within the staleness bound (svc_trainer.staleness).

    tok | version   | u   | w | A  | unclipped | clipped      | min   | loss_t | d loss_t / dθ
    0   | 0 (lag 3) | 2   | 1 | -1 | stale-masked (lag 3 > η): would add +2 and dθ +2 | 0
    1   | 1 (lag 2) | 1   | 6 | +1 | masked: w = 6 > cap 5                            | 0
    2   | 2 (lag 1) | 0.9 | 2 | -2 | -1.8      | -1.8         | -1.8  | +3.6   | +3.6
    3   | 3         | 1.1 | 1 | +1 | 1.1       | 1.1          | 1.1   | -1.1   | -1.1
    4   | 3         | 1.5 | 1 | +1 | 1.5       | 1.2 (above)  | 1.2   | -1.2   | 0    (clipped above)
    5   | 3         | 0.5 | 1 | -1 | -0.5      | -0.8 (below) | -0.8  | +0.8   | 0    (clipped below)
    6   | pad       | -   | - | +1 | padding (not a token)                            | 0
    kept tokens N = 4 (2..5); tokens in the mask = 5 (1..5); d loss_t / dθ = -w·u·A when unclipped wins
    """
    p = [0.0, LN(6), LN(2), 0.0, 0.0, 0.0, -0.3]
    b = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -7.0]
    theta = [LN(2), LN(6), LN(2) + LN(0.9), LN(1.1), LN(1.5), LN(0.5), 0.4]
    adv = [-1.0, 1.0, -2.0, 1.0, 1.0, -1.0, 1.0]
    trainable = token_staleness([0, 1, 2, 3, 3, 3], version=3, max_staleness=2).trainable
    assert trainable == (False, True, True, True, True, True)
    mask = [*trainable, False]
    return _t(theta, True), _t(p), _t(b), _t(adv), torch.tensor([mask])


def test_token_mean_loss_value_and_gradient_hand_worked():
    theta, p, b, adv, mask = _table()
    out = decoupled_ppo_loss(theta, p, b, adv, mask, eps_low=0.2, eps_high=0.2, weight_cap=5.0)
    assert isinstance(out, LossOutput)
    # (3.6 - 1.1 - 1.2 + 0.8) / 4 = 2.1 / 4 = 0.525
    assert out.loss.item() == pytest.approx(0.525, rel=1e-9)
    assert out.kept_tokens == 4
    out.loss.backward()
    # per-token derivatives / N = [0, 0, 3.6/4, -1.1/4, 0, 0, 0]
    assert theta.grad[0].tolist() == pytest.approx([0.0, 0.0, 0.9, -0.275, 0.0, 0.0, 0.0], abs=1e-9)


def test_the_stale_token_would_count_if_it_were_not_masked():
    # the same table with token 0 let through: loss (2.1 + 2) / 5 = 0.82, and token 0 gets dθ = +2 / 5
    theta, p, b, adv, mask = _table()
    mask[0, 0] = True
    out = decoupled_ppo_loss(theta, p, b, adv, mask)
    assert out.loss.item() == pytest.approx(0.82, rel=1e-9)
    out.loss.backward()
    assert theta.grad[0, 0].item() == pytest.approx(0.4, rel=1e-9)


def test_metrics_hand_worked():
    theta, p, b, adv, mask = _table()
    m = decoupled_ppo_loss(theta, p, b, adv, mask).metrics
    assert m["loss"] == pytest.approx(0.525, rel=1e-9)
    assert m["tokens"] == 5.0  # tokens in the mask, the capped one included, the stale one not
    assert m["clip_fraction"] == pytest.approx(2 / 4)  # tokens 4 and 5 of the 4 kept
    assert m["masked_fraction"] == pytest.approx(1 / 5)  # token 1 of the 5 in the mask
    assert m["mean_w"] == pytest.approx((2 + 1 + 1 + 1) / 4)  # over kept tokens: a masked w may be inf


def test_constant_aggregation_divides_the_sum_by_the_constant():
    theta, p, b, adv, mask = _table()
    out = decoupled_ppo_loss(theta, p, b, adv, mask, aggregation="constant", constant=10)
    # same kept-token sum 2.1, divided by 10 instead of N = 4
    assert out.loss.item() == pytest.approx(0.21, rel=1e-9)
    out.loss.backward()
    assert theta.grad[0].tolist() == pytest.approx([0.0, 0.0, 0.36, -0.11, 0.0, 0.0, 0.0], abs=1e-9)


def test_unclipped_side_of_the_ratio_keeps_its_gradient():
    # PPO only clips in the direction that would increase the objective:
    # tok0: u = 0.5 < 1-ε but A = +1: min(0.5, 0.8) = 0.5 (unclipped) -> loss -0.5, dθ = -0.5
    # tok1: u = 1.5 > 1+ε but A = -1: min(-1.5, -1.2) = -1.5 (unclipped) -> loss +1.5, dθ = +1.5
    theta = _t([LN(0.5), LN(1.5)], True)
    zeros = _t([0.0, 0.0])
    out = decoupled_ppo_loss(theta, zeros, zeros, _t([1.0, -1.0]), torch.tensor([[True, True]]))
    assert out.loss.item() == pytest.approx((-0.5 + 1.5) / 2, rel=1e-9)
    out.loss.backward()
    assert theta.grad[0].tolist() == pytest.approx([-0.25, 0.75], abs=1e-9)
    assert out.metrics["clip_fraction"] == 0.0


def test_asymmetric_clip_bounds_clip_higher():
    # ε_low = 0.2, ε_high = 0.28 (DAPO clip-higher), w = 1:
    # tok0: u = 1.25, A = +1: 1.25 < 1.28, not clipped -> loss -1.25, dθ = -1.25
    # tok1: u = 1.30, A = +1: clipped to 1.28 -> loss -1.28, dθ = 0
    # tok2: u = 0.79, A = -1: clipped to 0.8, min(-0.79, -0.8) = -0.8 -> loss +0.8, dθ = 0
    # tok3: u = 0.85, A = -1: inside [0.8, 1.28] -> loss +0.85, dθ = +0.85
    theta = _t([LN(1.25), LN(1.3), LN(0.79), LN(0.85)], True)
    zeros = _t([0.0] * 4)
    out = decoupled_ppo_loss(
        theta, zeros, zeros, _t([1.0, 1.0, -1.0, -1.0]), torch.ones(1, 4, dtype=torch.bool), eps_low=0.2, eps_high=0.28
    )
    assert out.loss.item() == pytest.approx((-1.25 - 1.28 + 0.8 + 0.85) / 4, rel=1e-9)
    out.loss.backward()
    assert theta.grad[0].tolist() == pytest.approx([-1.25 / 4, 0.0, 0.0, 0.85 / 4], abs=1e-9)
    assert out.metrics["clip_fraction"] == pytest.approx(0.5)


def test_behaviour_weight_scales_the_loss_and_gradient():
    # θ = p (u = 1), b = p - ln 3 -> w = 3, A = 0.5: loss = -3·0.5 = -1.5, dθ = -w·u·A = -1.5
    p = _t([-1.0])
    theta = p.clone().requires_grad_(True)
    out = decoupled_ppo_loss(theta, p, p - LN(3), _t([0.5]), torch.tensor([[True]]))
    assert out.loss.item() == pytest.approx(-1.5, rel=1e-9)
    out.loss.backward()
    assert theta.grad.item() == pytest.approx(-1.5, rel=1e-9)


def test_weight_cap_is_configurable():
    # w = 6: masked under the default cap 5, kept (and weighted by 6) under cap 10
    theta = _t([0.0], True)
    p, b, adv, mask = _t([0.0]), _t([-LN(6)]), _t([1.0]), torch.tensor([[True]])
    masked = decoupled_ppo_loss(theta, p, b, adv, mask)
    assert masked.loss.item() == 0.0 and masked.metrics["masked_fraction"] == 1.0
    kept = decoupled_ppo_loss(theta, p, b, adv, mask, weight_cap=10.0)
    assert kept.loss.item() == pytest.approx(-6.0, rel=1e-9)
    kept.loss.backward()
    assert theta.grad.item() == pytest.approx(-6.0, rel=1e-9)


def test_on_policy_gradient_is_reinforce():
    # proximal == behaviour == current: u = w = 1, nothing clipped, d loss / dθ_t = -A_t / N
    torch.manual_seed(0)
    logp = -torch.rand(3, 4, dtype=torch.float64) * 3
    adv = torch.tensor([[1.5], [-0.5], [0.25]], dtype=torch.float64).expand(3, 4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    theta = logp.clone().requires_grad_(True)
    out = decoupled_ppo_loss(theta, logp, logp, adv, mask)
    out.loss.backward()
    n = 7  # valid tokens
    expected = torch.where(mask, -adv / n, torch.zeros_like(adv))
    torch.testing.assert_close(theta.grad, expected, rtol=0, atol=1e-12)
    # the loss itself is -mean(A) over tokens (u = w = 1)
    assert out.loss.item() == pytest.approx(-(4 * 1.5 + 2 * -0.5 + 0.25) / n, rel=1e-9)
    assert out.metrics["mean_w"] == pytest.approx(1.0) and out.metrics["clip_fraction"] == 0.0


def test_loss_matches_the_design_formula_on_random_inputs():
    torch.manual_seed(1)
    n, t = 4, 6
    p = -torch.rand(n, t, dtype=torch.float64) * 4
    b = p + torch.randn(n, t, dtype=torch.float64) * 0.8
    theta = (p + torch.randn(n, t, dtype=torch.float64) * 0.3).requires_grad_(True)
    adv = torch.randn(n, 1, dtype=torch.float64).expand(n, t)
    mask = torch.rand(n, t) < 0.8
    out = decoupled_ppo_loss(theta, p, b, adv, mask, eps_low=0.2, eps_high=0.3, weight_cap=2.0)
    total, kept = 0.0, 0
    for i in range(n):
        for j in range(t):
            w = math.exp(p[i, j] - b[i, j])
            if not mask[i, j] or w > 2.0:
                continue
            u = math.exp(theta[i, j].item() - p[i, j])
            a = adv[i, j].item()
            total += -w * min(u * a, min(max(u, 0.8), 1.3) * a)
            kept += 1
    assert out.loss.item() == pytest.approx(total / kept, rel=1e-9)


def test_proximal_and_behaviour_get_no_gradient():
    theta, p, b, adv, mask = _table()
    p.requires_grad_(True)
    b.requires_grad_(True)
    decoupled_ppo_loss(theta, p, b, adv, mask).loss.backward()
    assert p.grad is None and b.grad is None
    assert theta.grad is not None


def test_nothing_kept_gives_zero_loss_and_zero_gradient():
    theta = _t([0.0, 0.0], True)
    out = decoupled_ppo_loss(theta, _t([0.0, 0.0]), _t([0.0, 0.0]), _t([1.0, 1.0]), torch.tensor([[False, False]]))
    assert out.loss.item() == 0.0 and out.kept_tokens == 0
    out.loss.backward()
    assert theta.grad.tolist() == [[0.0, 0.0]]
    assert out.metrics["tokens"] == 0.0 and out.metrics["mean_w"] == 1.0


def _loss_with_two_capped_tokens(theta):
    # b = -inf (or p - b = 1000) -> w = inf -> tokens 1 and 2 are capped; token 0 is kept
    return decoupled_ppo_loss(
        theta,
        _t([0.0, 0.0, 0.0]),
        _t([0.0, -math.inf, -1000.0]),
        _t([1.0, 1.0, 1.0]),
        torch.tensor([[True, True, True]]),
    )


def test_capped_token_with_infinite_weight_does_not_poison_the_loss_value():
    out = _loss_with_two_capped_tokens(_t([0.0, 0.0, 0.0], True))
    # the loss is the kept token's
    assert out.loss.item() == pytest.approx(-1.0)
    assert out.metrics["masked_fraction"] == pytest.approx(2 / 3)


def test_capped_token_with_infinite_weight_gets_zero_gradient():
    theta = _t([0.0, 0.0, 0.0], True)
    out = _loss_with_two_capped_tokens(theta)
    out.loss.backward()
    # only token 0 is kept: dθ = [-1, 0, 0], no nan from the masked ones (a fixed bug)
    assert theta.grad[0].tolist() == [-1.0, 0.0, 0.0]


def test_unknown_aggregation_is_an_error():
    theta, p, b, adv, mask = _table()
    with pytest.raises(ValueError, match="seq_mean"):
        decoupled_ppo_loss(theta, p, b, adv, mask, aggregation="seq_mean")


@pytest.mark.parametrize("constant", [None, 0])
def test_constant_aggregation_needs_a_positive_constant(constant):
    theta, p, b, adv, mask = _table()
    with pytest.raises(ValueError, match="constant"):
        decoupled_ppo_loss(theta, p, b, adv, mask, aggregation="constant", constant=constant)
