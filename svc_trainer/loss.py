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

__all__ = ["LossOutput", "decoupled_ppo_loss", "kept_tokens", "loss_metrics"]


@dataclass
class LossOutput:
    """The scalar loss (with grad), float metrics over the valid tokens, and how many tokens the
    loss kept (valid and under the weight cap): with none, its gradient is zero everywhere.
    `counts` are the sums the metrics come from (loss_metrics), which data-parallel ranks add up."""

    loss: torch.Tensor
    metrics: dict[str, float]
    kept_tokens: int
    counts: dict[str, float]


def loss_metrics(counts: dict[str, float], with_kl: bool) -> dict[str, float]:
    """The loss metrics from their sums: `loss`, `valid`, `kept`, `capped` and `clipped` tokens, and
    `w_sum`, `kl_sum` over the kept tokens (a batch's, or several ranks' added up)."""
    kept = counts["kept"]
    metrics = {
        "loss": counts["loss"],
        "tokens": counts["valid"],
        "clip_fraction": counts["clipped"] / max(kept, 1),
        "masked_fraction": counts["capped"] / max(counts["valid"], 1),
        "mean_w": counts["w_sum"] / kept if kept else 1.0,  # masked w may be inf: never summed
    }
    if with_kl:
        metrics["kl"] = counts["kl_sum"] / kept if kept else 0.0
    return metrics


def kept_tokens(w: torch.Tensor, mask: torch.Tensor, weight_cap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, capped) token masks: of the tokens in `mask`, those whose behaviour weight
    w = exp(p - b) is above the cap are masked out, the rest kept."""
    valid = mask.bool()
    capped = valid & (w > weight_cap)
    return valid & ~capped, capped


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
    keep, capped = kept_tokens(w, valid, weight_cap)
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
        clip_active = keep & (clipped < unclipped)  # the clipped branch won: no gradient there
        counts = {
            "loss": float(loss),
            "valid": float(valid.sum()),
            "kept": float(n_keep),
            "capped": float(capped.sum()),
            "clipped": float(clip_active.sum()),
            "w_sum": float(w[keep].sum()),
            "kl_sum": float(kl[keep].sum()) if kl is not None else 0.0,
        }
    return LossOutput(loss, loss_metrics(counts, kl is not None), n_keep, counts)
