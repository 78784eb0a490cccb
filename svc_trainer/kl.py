"""KL to a reference policy, per sampled token, from log-probs alone (docs/design.md §5).

With r = log π_ref(t) − log π_θ(t) for the token t the sample holds (drawn from the behaviour
policy, close to π_θ), the estimators of KL(π_θ ‖ π_ref) in Schulman's note, as TRL and verl use them:

    k1 = −r                   unbiased, but negative for some tokens (high variance)
    k2 = r² / 2               biased, low variance
    k3 = exp(r) − 1 − r       unbiased and never negative, low variance (verl's `low_var_kl`)

k3 is clamped at 10, as verl does, so that one token the reference finds absurd cannot swamp
the batch. The gradient flows through log π_θ only: the reference is a fixed model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from jetrl.config import RunSpec

__all__ = ["KlEstimator", "kl_per_token", "kl_reference"]

KlEstimator = Literal["k1", "k2", "k3"]
K3_CLAMP = 10.0


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KlEstimator) -> torch.Tensor:
    """The estimator's value per token ([N, T], with the gradient of `logprobs`)."""
    r = ref_logprobs.detach() - logprobs
    if estimator == "k1":
        return -r
    if estimator == "k2":
        return 0.5 * r * r
    if estimator == "k3":
        return torch.clamp(torch.exp(r) - 1.0 - r, max=K3_CLAMP)
    raise ValueError(f"unknown KL estimator {estimator!r}")


def kl_reference(spec: RunSpec, teacher: torch.nn.Module | None) -> torch.nn.Module | None:
    """The KL anchor's policy (`train.kl_reference`): the EMA teacher's model, or a frozen copy of
    the run's starting model; None without a KL term, so nothing extra is kept."""
    if not spec.train.kl_coef:
        return None
    if spec.train.kl_reference == "teacher" and teacher is not None:
        return teacher
    from jetrl.policy.load import load_policy

    reference, _ = load_policy(spec.model.path)
    reference.eval()
    reference.requires_grad_(False)
    return reference
