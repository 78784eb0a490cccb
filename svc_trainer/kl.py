"""KL to a reference policy, per sampled token, from log-probs alone (docs/design.md §5).

With r = log π_ref(t) − log π_θ(t) for the token t the sample holds (drawn from the behaviour
policy, close to π_θ), the estimators of KL(π_θ ‖ π_ref) in Schulman's note, as TRL and verl use them:

    k1 = −r                   unbiased, but negative for some tokens (high variance)
    k2 = r² / 2               biased, low variance
    k3 = exp(r) − 1 − r       unbiased and never negative, low variance (verl's `low_var_kl`)

k3 is clamped at 10, as verl does, so that one token the reference finds absurd cannot swamp
the batch. The gradient flows through log π_θ only: the reference is a fixed model.

`train.kl_in` places β · KL: in the loss (per token, the trained policy's log-probs as π_θ), or
in the reward (per sample, β · Σ_t k over its completion tokens with the behaviour log-probs as
π_θ, subtracted from its reward before the group's advantages; no gradient of its own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from jetrl.config import RunSpec

__all__ = ["KlEstimator", "kl_penalties", "kl_per_token", "kl_reference"]

KlEstimator = Literal["k1", "k2", "k3"]
KlUse = Literal["loss", "reward"]  # train.kl_in
K3_CLAMP = 10.0


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KlEstimator) -> torch.Tensor:
    """The estimator's value per token ([N, T], with the gradient of `logprobs`)."""
    r = ref_logprobs.detach() - logprobs
    if estimator == "k1":
        return -r
    if estimator == "k2":
        return 0.5 * r * r
    if estimator == "k3":
        # expm1 keeps the precision exp(r) − 1 loses for tiny r; what rounding still leaves of the
        # wrong sign (a few ulps) is cut at 0, where k3 is bounded
        return torch.clamp(torch.expm1(r) - r, min=0.0, max=K3_CLAMP)
    raise ValueError(f"unknown KL estimator {estimator!r}")


def kl_penalties(
    behaviour: torch.Tensor, reference: torch.Tensor, real: torch.Tensor, estimator: KlEstimator, coef: float
) -> tuple[list[float], float]:
    """`train.kl_in: reward`: per sample, β · Σ_t k(t) over its real completion tokens ([N, T]
    log-probs, behaviour's and the reference's), which comes off its reward before advantages;
    and the mean of k per real token (the version's `kl` metric)."""
    per_token = kl_per_token(behaviour, reference, estimator) * real
    tokens = int(real.sum())
    return (coef * per_token.sum(dim=1)).tolist(), float(per_token.sum()) / tokens if tokens else 0.0


def kl_reference(spec: RunSpec, teacher: torch.nn.Module | None, use: KlUse = "loss") -> torch.nn.Module | None:
    """The KL anchor's policy (`train.kl_reference`): the EMA teacher's model, or a frozen copy of
    the run's starting model, for the engine's loss or the trainer's reward penalty, whichever
    `train.kl_in` says; None for the other, and without a KL term, so nothing extra is kept."""
    if not spec.train.kl_coef or spec.train.kl_in != use:
        return None
    if spec.train.kl_reference == "teacher" and teacher is not None:
        return teacher
    from jetrl.policy.load import load_policy

    reference, _ = load_policy(spec.model.path)
    reference.eval()
    reference.requires_grad_(False)
    return reference
