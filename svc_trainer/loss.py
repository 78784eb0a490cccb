"""AReaL's decoupled PPO loss (docs/design.md §5).

Per token: u = exp(θ - p) is the PPO ratio against the proximal policy p (the trainer's
weights just before this update), w = exp(p - b) the importance weight that corrects for the
behaviour policy b that actually sampled the token (stale or interrupted generation).
loss_t = -w · min(u·A, clip(u, 1-ε_low, 1+ε_high)·A); tokens with w above a cap are masked,
since a huge w means the sample says little about the current policy and would dominate.
Tokens outside `mask` (padding, and tokens the staleness bound masks) take no part at all.
With a reference policy, β · KL per token (svc_trainer/kl.py) joins each kept token's loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LossOutput", "decoupled_ppo_loss"]


@dataclass
class LossOutput:
    """The scalar loss (with grad), float metrics over the valid tokens, and how many tokens the
    loss kept (valid and under the weight cap): with none, its gradient is zero everywhere."""

    loss: torch.Tensor
    metrics: dict[str, float]
    kept_tokens: int


def decoupled_ppo_loss(
    logprobs: torch.Tensor,
    proximal_logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    weight_cap: float = 5.0,
    aggregation: str = "token_mean",
    constant: float | None = None,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> LossOutput:
    """Decoupled PPO loss over [N, T] per-token tensors; `mask` marks the tokens to train (real
    completion tokens within the staleness bound).

    aggregation "token_mean" averages over unmasked tokens; "constant" divides the sum by
    `constant` (Dr. GRPO: batch size × max_new_tokens), so every token weighs the same
    whatever the lengths in the batch.

    `kl` (per token, svc_trainer/kl.py) adds `kl_coef` times its aggregate over the kept tokens,
    by the same rule: the anchor to a reference policy.
    """
    if aggregation not in ("token_mean", "constant"):
        raise ValueError(f"unknown loss aggregation {aggregation!r}")
    if aggregation == "constant" and not constant:
        raise ValueError("aggregation 'constant' needs a positive `constant`")
    p, b = proximal_logprobs.detach(), behaviour_logprobs.detach()
    valid = mask.bool()
    w = torch.exp(p - b)
    capped = valid & (w > weight_cap)
    keep = valid & ~capped
    u = torch.exp(logprobs - p)
    unclipped = u * advantages
    clipped = torch.clamp(u, 1.0 - eps_low, 1.0 + eps_high) * advantages
    # A masked token's w may be inf or nan: zero it before the product, or its gradient
    # (0 · w) would be nan and poison every parameter through backward.
    w_kept = torch.where(keep, w, torch.zeros_like(w))
    per_token = -w_kept * torch.minimum(unclipped, clipped)
    if kl is not None and kl_coef:
        per_token = per_token + kl_coef * kl
    total = torch.where(keep, per_token, torch.zeros_like(per_token)).sum()
    n_keep = int(keep.sum())
    # `constant` is positive whenever aggregation is "constant" (refused above otherwise)
    denom = float(constant) if aggregation == "constant" and constant else float(max(n_keep, 1))
    loss = total / denom
    with torch.no_grad():
        n_valid = max(int(valid.sum()), 1)
        clip_active = keep & (clipped < unclipped)  # the clipped branch won: no gradient there
        metrics = {
            "loss": float(loss),
            "tokens": float(valid.sum()),
            "clip_fraction": float(clip_active.sum()) / max(n_keep, 1),
            "masked_fraction": float(capped.sum()) / n_valid,
            "mean_w": float(w[keep].mean()) if keep.any() else 1.0,  # masked w may be inf
        }
        if kl is not None:
            metrics["kl"] = float(kl[keep].mean()) if keep.any() else 0.0
    return LossOutput(loss, metrics, n_keep)
