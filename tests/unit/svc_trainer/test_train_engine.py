"""TorchTrainEngine (svc_trainer/engine.py): log-probs consistent with the rollout engine, and a step that moves them.

(Named test_train_engine.py, not test_engine.py: tests/ has no __init__.py files, so two test
modules called test_engine.py in different folders collide under pytest's default import mode.)
"""

import copy
import math

import pytest
import torch

import svc_trainer.engine
from jetrl.policy import encode_prompt
from jetrl.spec_sections import TrainSpec
from svc_rollout.api import GenRequest
from svc_rollout.engine import TorchEngine
from svc_trainer.api import TrainSample
from svc_trainer.engine import TorchTrainEngine
from svc_trainer.loss import decoupled_ppo_loss
from svc_trainer.staleness import batch_metrics, token_staleness
from tiny_models import TOK, spread_model

PROMPTS = ["12+34=", "7-5+9+13=", "1", "Question: how many?\nAnswer:"]
METRIC_KEYS = {"loss", "tokens", "clip_fraction", "masked_fraction", "mean_w", "grad_norm", "entropy"}


@pytest.fixture
def loss_calls(monkeypatch):
    """What each minibatch hands the loss: (θ, proximal, behaviour, mask), detached."""
    calls = []

    def spy(logprobs, proximal, behaviour, advantages, mask, **kwargs):
        calls.append((logprobs.detach().clone(), proximal.detach().clone(), behaviour.clone(), mask.clone()))
        return decoupled_ppo_loss(logprobs, proximal, behaviour, advantages, mask, **kwargs)

    monkeypatch.setattr(svc_trainer.engine, "decoupled_ppo_loss", spy)
    return calls


def rollouts(model, temperature, max_new=(3, 9, 5, 7), seed=0):
    """Samples from the rollout engine on a copy of `model` (different prompt and completion lengths)."""
    engine = TorchEngine(copy.deepcopy(model), TOK)
    prompts = [encode_prompt(TOK, p) for p in PROMPTS]
    reqs = [GenRequest(p, n, temperature=temperature, seed=seed + i) for i, (p, n) in enumerate(zip(prompts, max_new))]
    return prompts, engine.generate(reqs)


def sum_logprob(engine, prompt, completion):
    lp, mask, _ = engine.token_logprobs([prompt], [completion], grad=False)
    return float(lp[mask].sum())


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_token_logprobs_equal_the_rollout_behaviour_logprobs(temperature):
    model = spread_model()
    prompts, results = rollouts(model, temperature)
    trainer = TorchTrainEngine(copy.deepcopy(model), TrainSpec(), temperature=temperature)
    lp, mask, _ = trainer.token_logprobs(prompts, [r.token_ids for r in results], grad=False)
    width = max(len(r.token_ids) for r in results)
    assert lp.shape == mask.shape == (len(results), width)
    for i, r in enumerate(results):
        n = len(r.token_ids)
        assert mask[i].tolist() == [True] * n + [False] * (width - n)
        assert lp[i, :n].tolist() == pytest.approx(r.logprobs, abs=1e-5)
        assert lp[i, n:].abs().sum() == 0  # padding positions are zero


def full_sequence_logprobs(model, prompt, completion):
    """Reference: one forward over prompt + completion, no padding, no cache."""
    logits = model(input_ids=torch.tensor([[*prompt, *completion]])).logits[0].float()
    lp = torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(completion)], -1)
    return lp.gather(-1, torch.tensor(completion)[:, None])[:, 0], -(lp.exp() * lp).sum(-1)


@pytest.mark.parametrize("groups", [[4, 3, 1], [1, 1, 1, 1]])
def test_token_logprobs_of_shared_prompts_equal_whole_sequence_forwards_with_their_gradients(groups):
    # groups of samples sharing a prompt, prompts and completions of different lengths, a one-token completion
    model = spread_model()
    prompts = [encode_prompt(TOK, p) for p in PROMPTS][: len(groups)]
    rows = [
        (prompts[g], [5 + (3 * g + i) % 17 for i in range(1 + (g + k) % 6)])
        for g, n in enumerate(groups)
        for k in range(n)
    ]
    rows[-1] = (rows[-1][0], [9])
    shapes: list[tuple[int, int]] = []
    hook = model.model.embed_tokens.register_forward_hook(lambda m, args, out: shapes.append(tuple(args[0].shape)))
    try:
        lp, mask, entropy = svc_trainer.engine.token_logprobs(
            model, [p for p, _ in rows], [c for _, c in rows], 1.0, torch.device("cpu"), grad=True
        )
    finally:
        hook.remove()
    # each distinct prompt goes through the model once, then every row's completion
    assert [n for n, _ in shapes] == [len(groups), len(rows)]
    lp[mask].sum().backward()
    ours = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    total = 0
    for i, (prompt, completion) in enumerate(rows):
        ref_lp, ref_entropy = full_sequence_logprobs(model, prompt, completion)
        n = len(completion)
        assert mask[i].tolist() == [True] * n + [False] * (mask.shape[1] - n)
        torch.testing.assert_close(lp[i, :n].detach(), ref_lp.detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(entropy[i, :n], ref_entropy.detach(), atol=1e-5, rtol=1e-5)
        total = total + ref_lp.sum()
    total.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_token_logprobs_grad_flag():
    model = spread_model()
    prompts, results = rollouts(model, 1.0)
    trainer = TorchTrainEngine(model, TrainSpec())
    with_grad, _, _ = trainer.token_logprobs(prompts, [r.token_ids for r in results], grad=True)
    without, _, _ = trainer.token_logprobs(prompts, [r.token_ids for r in results], grad=False)
    assert with_grad.requires_grad and not without.requires_grad
    torch.testing.assert_close(with_grad.detach(), without)


@pytest.mark.parametrize("advantage, direction", [(1.0, 1), (-1.0, -1)])
def test_one_step_moves_the_sample_log_prob_with_the_advantage(advantage, direction):
    model = spread_model()
    prompts, results = rollouts(model, 1.0)
    r = results[1]
    trainer = TorchTrainEngine(model, TrainSpec(lr=1e-2))
    before = sum_logprob(trainer, prompts[1], r.token_ids)
    assert before == pytest.approx(sum(r.logprobs), abs=1e-4)
    metrics = trainer.train_step([TrainSample(prompts[1], r.token_ids, r.logprobs, advantage)])
    after = sum_logprob(trainer, prompts[1], r.token_ids)
    assert (after - before) * direction > 0.1
    assert set(metrics) >= METRIC_KEYS
    assert all(math.isfinite(v) for v in metrics.values())
    # on-policy, one minibatch: u = 1, w = 1 -> loss = -A (token mean), nothing clipped or masked
    assert metrics["loss"] == pytest.approx(-advantage, abs=1e-4)
    assert metrics["tokens"] == len(r.token_ids)
    assert metrics["mean_w"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["clip_fraction"] == 0.0 and metrics["masked_fraction"] == 0.0
    assert metrics["grad_norm"] > 0


def test_group_step_raises_positive_and_lowers_negative_samples():
    model = spread_model()
    prompts, results = rollouts(model, 1.0, max_new=(6, 6, 6, 6))
    advantages = [1.0, -1.0, 0.5, -0.5]
    trainer = TorchTrainEngine(model, TrainSpec(lr=5e-3))
    before = [sum_logprob(trainer, p, r.token_ids) for p, r in zip(prompts, results)]
    metrics = trainer.train_step(
        [TrainSample(p, r.token_ids, r.logprobs, a) for p, r, a in zip(prompts, results, advantages)]
    )
    after = [sum_logprob(trainer, p, r.token_ids) for p, r in zip(prompts, results)]
    for a, b0, b1 in zip(advantages, before, after):
        assert (b1 - b0) * a > 0
    # on-policy: every token is kept (a completion may end early on EOS)
    assert metrics["tokens"] == sum(len(r.token_ids) for r in results) > 4
    assert all(math.isfinite(v) for v in metrics.values())


def test_constant_aggregation_normalises_by_batch_size_times_max_new_tokens():
    model = spread_model()
    prompts, results = rollouts(model, 1.0, max_new=(3, 5, 3, 5))
    samples = [TrainSample(p, r.token_ids, r.logprobs, 1.0) for p, r in zip(prompts[:2], results[:2])]
    assert [len(s.completion_token_ids) for s in samples] == [3, 5]
    trainer = TorchTrainEngine(model, TrainSpec(loss_agg="constant"), max_new_tokens=8)
    metrics = trainer.train_step(samples)
    # on-policy, A = 1: sum over 3 + 5 tokens of -1, divided by 2 samples × 8 = -8/16
    assert metrics["loss"] == pytest.approx(-0.5, abs=1e-4)


def test_constant_aggregation_needs_max_new_tokens():
    with pytest.raises(ValueError, match="max_new_tokens"):
        TorchTrainEngine(spread_model(), TrainSpec(loss_agg="constant"))


def test_minibatches_take_several_optimizer_steps():
    model = spread_model()
    prompts, results = rollouts(model, 1.0, max_new=(4, 6, 2, 5))
    samples = [TrainSample(p, r.token_ids, r.logprobs, a) for p, r, a in zip(prompts, results, [1.0, -1.0, 1.0, -1.0])]
    trainer = TorchTrainEngine(model, TrainSpec(lr=1e-2, minibatches=2))
    metrics = trainer.train_step(samples)
    assert trainer.optimizer.state_dict()["state"][0]["step"] == 2
    assert set(metrics) >= METRIC_KEYS
    assert all(math.isfinite(v) for v in metrics.values())
    # tokens is summed over the two minibatches: every token of (4 + 6) + (2 + 5) at most, fewer on an early EOS
    assert metrics["tokens"] == sum(len(r.token_ids) for r in results) > 8


def test_second_minibatch_is_clipped_against_the_proximal_policy_of_before_the_first(loss_calls):
    model = spread_model()
    prompts, results = rollouts(model, 1.0, max_new=(6, 6, 6, 6))
    r = results[1]
    # the same sample in both minibatches, A = +1: the first step raises its log-probs, so the
    # second sees u = exp(θ - p) > 1 against the proximal log-probs taken before the first step
    sample = TrainSample(prompts[1], r.token_ids, r.logprobs, 1.0)
    trainer = TorchTrainEngine(model, TrainSpec(lr=1e-2, minibatches=2))
    metrics = trainer.train_step([sample, sample])
    assert len(loss_calls) == 2
    (theta1, p1, _, _), (theta2, p2, b2, _) = loss_calls
    torch.testing.assert_close(torch.exp(theta1 - p1), torch.ones_like(p1), rtol=0, atol=1e-5)  # u = 1
    # one proximal for both: the pre-update weights, which are also the behaviour policy here
    torch.testing.assert_close(p2, p1, rtol=0, atol=1e-6)
    torch.testing.assert_close(p2, b2, rtol=0, atol=1e-5)
    u2 = torch.exp(theta2 - p2)
    assert float((u2 - 1).abs().max()) > 0.2
    assert metrics["clip_fraction"] > 0  # some u2 > 1 + ε_high with A > 0
    assert metrics["mean_w"] == pytest.approx(1.0, abs=1e-4)  # w = exp(p - b) is untouched by the first step


@pytest.mark.parametrize("minibatches", [1, 2])
def test_synchronous_rollouts_have_behaviour_weight_one(loss_calls, minibatches):
    # η = 0, no interruption: the rollout engine's log-probs are the trainer's proximal ones, w = 1
    model = spread_model()
    prompts = [encode_prompt(TOK, p) for p in PROMPTS]
    engine = TorchEngine(copy.deepcopy(model), TOK)
    reqs = [
        GenRequest(p, 8, temperature=1.0, top_p=1.0, seed=100 + 10 * i + k)
        for i, p in enumerate(prompts)
        for k in range(2)
    ]
    results = engine.generate(reqs)
    checked = [token_staleness([0] * len(r.token_ids), version=0, max_staleness=0) for r in results]
    samples = [
        TrainSample(req.prompt_token_ids, r.token_ids, r.logprobs, 1.0 if k % 2 else -1.0, trainable=st.trainable)
        for k, (req, r, st) in enumerate(zip(reqs, results, checked))
    ]
    metrics = TorchTrainEngine(model, TrainSpec(minibatches=minibatches)).train_step(samples)
    assert metrics["mean_w"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["masked_fraction"] == 0.0
    assert metrics["tokens"] == sum(len(r.token_ids) for r in results)
    assert batch_metrics(checked) == {"offpolicy_token_share": 0.0, "stale_masked_tokens": 0.0}
    for _, proximal, behaviour, mask in loss_calls:  # every single token, not just the mean
        assert mask.any()
        w = torch.exp(proximal - behaviour)[mask]
        torch.testing.assert_close(w, torch.ones_like(w), rtol=0, atol=1e-4)


def test_stale_tokens_never_reach_the_loss():
    model = spread_model()
    prompts, results = rollouts(model, 1.0)
    r = results[1]
    # a resumed sample whose first two tokens are stale: their behaviour log-probs are garbage
    # (w = e^1000, would be capped if they reached the loss) and they must simply be absent
    logprobs = [lp - 1000.0 for lp in r.logprobs[:2]] + list(r.logprobs[2:])
    trainable = [False, False] + [True] * (len(r.token_ids) - 2)
    sample = TrainSample(prompts[1], r.token_ids, logprobs, 1.0, trainable)
    metrics = TorchTrainEngine(model, TrainSpec()).train_step([sample])
    assert metrics["tokens"] == len(r.token_ids) - 2
    assert metrics["masked_fraction"] == 0.0
    assert metrics["loss"] == pytest.approx(-1.0, abs=1e-4)  # on-policy, A = 1, over the trainable tokens


def test_masking_the_tail_trains_exactly_like_the_truncated_sample():
    # causal LM: the log-probs of the first 3 tokens do not depend on later ones, so masking
    # tokens 3.. gives the same loss and the same gradient as a completion cut after token 3
    model = spread_model()
    prompts, results = rollouts(model, 1.0)
    r = results[1]
    assert len(r.token_ids) > 3
    masked = TorchTrainEngine(copy.deepcopy(model), TrainSpec(lr=1e-2))
    cut = TorchTrainEngine(model, TrainSpec(lr=1e-2))
    trainable = [True] * 3 + [False] * (len(r.token_ids) - 3)
    m1 = masked.train_step([TrainSample(prompts[1], r.token_ids, r.logprobs, -1.0, trainable)])
    m2 = cut.train_step([TrainSample(prompts[1], r.token_ids[:3], r.logprobs[:3], -1.0)])
    assert m1 == pytest.approx(m2, abs=1e-5)
    # (the gradients, left on the parameters by the step; AdamW's normalised update would
    # magnify float rounding wherever a gradient is near zero)
    for a, b in zip(masked.model.parameters(), cut.model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-6)


def test_batch_with_no_trainable_token_changes_nothing():
    model = spread_model()
    prompts, results = rollouts(model, 1.0)
    trainer = TorchTrainEngine(model, TrainSpec(lr=1e-2, weight_decay=0.1, minibatches=2))
    # a real step first, so AdamW has momentum that a zero-gradient step would still apply
    trainer.train_step([TrainSample(prompts[0], results[0].token_ids, results[0].logprobs, 1.0)])
    before = [p.detach().clone() for p in model.parameters()]
    stale = [TrainSample(p, r.token_ids, r.logprobs, 1.0, [False] * len(r.token_ids)) for p, r in zip(prompts, results)]
    metrics = trainer.train_step(stale)
    assert metrics["tokens"] == 0 and metrics["loss"] == 0.0 and metrics["grad_norm"] == 0.0
    assert all(math.isfinite(v) for v in metrics.values())
    assert trainer.optimizer.state_dict()["state"][0]["step"] == 1  # only the first step
    for p0, p1 in zip(before, model.parameters()):
        assert torch.equal(p0, p1)


def test_stale_behaviour_log_probs_are_importance_weighted():
    model = spread_model()
    prompts, results = rollouts(model, 1.0)
    r = results[0]
    # behaviour log-probs ln 2 below the proximal ones: w = 2 on every token
    stale = [lp - math.log(2) for lp in r.logprobs]
    metrics = TorchTrainEngine(model, TrainSpec()).train_step([TrainSample(prompts[0], r.token_ids, stale, 1.0)])
    assert metrics["mean_w"] == pytest.approx(2.0, rel=1e-4)
    assert metrics["loss"] == pytest.approx(-2.0, rel=1e-4)
    assert metrics["masked_fraction"] == 0.0


def test_tokens_above_the_weight_cap_are_masked():
    model = spread_model()
    prompts, results = rollouts(model, 1.0)
    r = results[0]
    # first token: w = e^3 ≈ 20 > cap 5 -> masked; the others on-policy
    stale = [r.logprobs[0] - 3.0] + list(r.logprobs[1:])
    metrics = TorchTrainEngine(model, TrainSpec()).train_step([TrainSample(prompts[0], r.token_ids, stale, 1.0)])
    assert metrics["masked_fraction"] == pytest.approx(1 / len(r.token_ids))
    assert metrics["loss"] == pytest.approx(-1.0, abs=1e-4)
    assert all(math.isfinite(v) for v in metrics.values())


def test_one_hopelessly_stale_token_does_not_poison_the_model():
    model = spread_model()
    prompts, results = rollouts(model, 1.0)
    r = results[0]
    stale = [r.logprobs[0] - 1000.0] + list(r.logprobs[1:])  # w = e^1000 = inf in float32: must be masked
    trainer = TorchTrainEngine(model, TrainSpec(lr=1e-2))
    metrics = trainer.train_step([TrainSample(prompts[0], r.token_ids, stale, 1.0)])
    assert math.isfinite(metrics["grad_norm"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_empty_completion_in_a_batch_is_ignored():
    model = spread_model()
    prompts, results = rollouts(model, 1.0)
    samples = [
        TrainSample(prompts[0], [], [], 1.0),
        TrainSample(prompts[1], results[1].token_ids, results[1].logprobs, 1.0),
    ]
    metrics = TorchTrainEngine(model, TrainSpec()).train_step(samples)
    assert metrics["tokens"] == len(results[1].token_ids)
    assert all(math.isfinite(v) for v in metrics.values())


def test_train_step_rejects_bad_batches():
    trainer = TorchTrainEngine(spread_model(), TrainSpec())
    with pytest.raises(ValueError, match="at least one sample"):
        trainer.train_step([])
    with pytest.raises(ValueError, match="log-prob"):
        trainer.train_step([TrainSample([1, 5], [6, 7, 8], [-1.0, -1.0], 1.0)])
    with pytest.raises(ValueError, match="trainable"):
        trainer.train_step([TrainSample([1, 5], [6, 7], [-1.0, -1.0], 1.0, trainable=[True])])


def test_entropy_is_the_mean_over_real_tokens_of_the_policys_distribution_before_the_step():
    """Collapse's first sign (issue 17): each completion position's −Σ p log p at the behaviour's
    temperature, worked from the model's own logits, averaged over every trained token."""
    model = spread_model()
    prompts, results = rollouts(model, temperature=0.7)
    samples = [TrainSample(q, r.token_ids, r.logprobs, 1.0) for q, r in zip(prompts, results)]
    by_hand = []
    with torch.no_grad():
        for q, r in zip(prompts, results):
            ids = torch.tensor([list(q) + list(r.token_ids)])
            logits = model.eval()(input_ids=ids).logits[0].float() / 0.7
            for t in range(len(r.token_ids)):  # the logits at position j predict token j + 1
                p = torch.softmax(logits[len(q) - 1 + t], dim=-1)
                by_hand.append(float(-(p * p.log()).sum()))
    model.train()
    metrics = TorchTrainEngine(copy.deepcopy(model), TrainSpec(), temperature=0.7).train_step(samples)
    assert metrics["entropy"] == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-4)
    assert 0.0 < metrics["entropy"] < math.log(len(TOK))
