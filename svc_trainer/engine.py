"""Plain-torch training engine: per-token log-probs and one decoupled-PPO update per version.

Each `train_step` is one policy version (docs/design.md §5): proximal log-probs p are those of the current
weights before anything changes, taken once for the whole batch by a no-grad pass; then the batch
is split into `train.minibatches` slices, each followed by an AdamW step with global-norm gradient
clipping, so from the second slice on u = exp(θ - p) moves away from 1 and the PPO clip binds.
With one minibatch θ == p at the update, so p is that forward detached (exact, and one pass
cheaper), u = 1 and the step is the plain importance-weighted policy gradient.

It also reports how far the behaviour log-probs of fresh tokens (made by these very weights) are
from its own: the generation engine's numerical disagreement, which the behaviour weight
w = exp(p - b) absorbs (logprob_gap_mean, logprob_gap_max).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import torch
from transformers import DynamicCache, PreTrainedModel

from jetrl.policy.temperature import logprob_temperature
from jetrl.spec_sections import TrainSpec
from svc_trainer.api import TrainSample
from svc_trainer.checkpoint import save_weights
from svc_trainer.kl import kl_per_token
from svc_trainer.loss import LossOutput, decoupled_ppo_loss

__all__ = ["Gap", "InProcess", "TorchTrainEngine", "check_samples", "sample_tensors", "token_logprobs"]


class InProcess:
    """The TrainEngine half shared by engines whose model and AdamW live in the trainer process:
    a version is that model's weights, and the state a restart needs is the optimizer's state dict."""

    model: PreTrainedModel
    optimizer: torch.optim.Optimizer

    def save_weights(self, path: Path, dtype: torch.dtype | None, shard_bytes: int) -> Path:
        return save_weights(path, self.model, dtype, shard_bytes)

    def save_state(self, version: int) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state(self, record: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(record["optimizer"])

    def close(self) -> None:
        """Nothing outside this object to release."""


class TorchTrainEngine(InProcess):
    """Owns the model being trained and its AdamW state."""

    def __init__(
        self,
        model: PreTrainedModel,
        train_spec: TrainSpec,
        temperature: float = 1.0,
        *,
        max_new_tokens: int | None = None,
        reference: torch.nn.Module | None = None,
    ):
        if train_spec.loss_agg == "constant" and not max_new_tokens:
            raise ValueError("loss_agg 'constant' needs max_new_tokens for its normaliser")
        self.model = model.train()
        self.spec = train_spec
        self.temperature = logprob_temperature(temperature)  # as the rollout took the behaviour's
        self.max_new_tokens = max_new_tokens
        self.device = next(model.parameters()).device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=train_spec.lr, weight_decay=train_spec.weight_decay)
        in_loss = bool(train_spec.kl_coef) and train_spec.kl_in == "loss"
        if in_loss and reference is None:
            raise ValueError("train.kl_coef (kl_in: loss) needs a reference model")
        # the KL anchor's policy: frozen, never optimised (the initial policy or the EMA teacher)
        self.reference = reference if in_loss else None

    def token_logprobs(
        self,
        prompt_ids_list: Sequence[Sequence[int]],
        completion_ids_list: Sequence[Sequence[int]],
        grad: bool,
        model: torch.nn.Module | None = None,
    ) -> TokenLogprobs:
        """token_logprobs of the trained model, or of `model` (the reference)."""
        return token_logprobs(
            model or self.model, prompt_ids_list, completion_ids_list, self.temperature, self.device, grad
        )

    def train_step(self, samples: Sequence[TrainSample], lr: float | None = None) -> dict[str, float]:
        """One policy version on a batch: `train.minibatches` optimizer steps (fewer if the batch has
        fewer samples). Returns the loss metrics, "tokens" summed and the rest averaged over minibatches.

        A minibatch in which no token survives the masks (all stale, all above the weight cap)
        takes no optimizer step: its gradient is zero, but AdamW's momentum and weight decay would
        still move the weights. If that is the whole batch, the weights come out unchanged.
        """
        check_samples(samples)
        for group in self.optimizer.param_groups:
            group["lr"] = self.spec.lr if lr is None else lr
        prompts = [s.prompt_token_ids for s in samples]
        completions = [s.completion_token_ids for s in samples]
        parts = [idx.tolist() for idx in torch.arange(len(samples)).chunk(self.spec.minibatches) if len(idx)]
        # Proximal log-probs: the weights as they are before this version's first update.
        proximal = self.token_logprobs(prompts, completions, grad=False)[0] if len(parts) > 1 else None
        totals: dict[str, float] = {}
        gap = Gap()
        entropies = TokenMean()
        for rows in parts:
            current, real, entropy = self.token_logprobs(
                [prompts[i] for i in rows], [completions[i] for i in rows], grad=True
            )
            t = current.shape[1]  # a minibatch may have shorter completions than the batch
            behaviour, trainable, fresh = sample_tensors([samples[i] for i in rows], current)
            entropies.add(entropy[real & trainable])  # the tokens it trains, as its other metrics
            prox = current.detach() if proximal is None else proximal[rows, :t]
            gap.add((behaviour - prox).abs()[real & fresh])
            advantages = torch.tensor([samples[i].advantage for i in rows], device=self.device)[:, None]
            # max_new_tokens is set whenever loss_agg is "constant" (__init__ refuses it otherwise)
            tokens = self.max_new_tokens if self.spec.loss_agg == "constant" else None
            constant = len(rows) * tokens if tokens else None
            kl = None
            if self.reference is not None:
                ref = self.token_logprobs(
                    [prompts[i] for i in rows], [completions[i] for i in rows], grad=False, model=self.reference
                )[0]
                kl = kl_per_token(current, ref, self.spec.kl_estimator)
            out = decoupled_ppo_loss(
                current,
                prox,
                behaviour,
                advantages.expand_as(current),
                real & trainable,
                eps_low=self.spec.clip_eps_low,
                eps_high=self.spec.clip_eps_high,
                weight_cap=self.spec.behaviour_weight_cap,
                aggregation=self.spec.loss_agg,
                constant=constant,
                kl=kl,
                kl_coef=self.spec.kl_coef,
            )
            for k, v in {**out.metrics, "grad_norm": self._update(out)}.items():
                totals[k] = totals.get(k, 0.0) + (v if k == "tokens" else v / len(parts))
        return {**totals, **gap.metrics(), "entropy": entropies.mean()}

    def _update(self, out: LossOutput) -> float:
        """One AdamW step on the loss unless it kept no token or its gradient is not finite; returns
        the gradient norm before clipping."""
        if not out.kept_tokens:
            return 0.0
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.spec.grad_clip)
        if not torch.isfinite(grad_norm):
            # a non-finite gradient would turn every weight into NaN: no step, and the caller
            # refuses to make a version of it (svc_trainer.worker.NonFiniteStep)
            self.optimizer.zero_grad(set_to_none=True)
            return float(grad_norm)
        self.optimizer.step()
        return float(grad_norm)


def check_samples(samples: Sequence[TrainSample]) -> None:
    """Refuse a batch whose per-token lists do not match its completions."""
    if not samples:
        raise ValueError("train_step needs at least one sample")
    for s in samples:
        if len(s.logprobs) != len(s.completion_token_ids):
            raise ValueError("every completion token needs exactly one behaviour log-prob")
        if s.trainable is not None and len(s.trainable) != len(s.completion_token_ids):
            raise ValueError("`trainable` needs exactly one flag per completion token")


class TokenLogprobs(NamedTuple):
    """[N, T] per completion token (T = the longest completion): its log-prob under the model,
    whether it is real (not padding), and the entropy of the model's distribution there (no
    gradient: a metric, the `entropy` one, collapse's first sign)."""

    logprobs: torch.Tensor
    mask: torch.Tensor
    entropy: torch.Tensor


def token_logprobs(
    model: torch.nn.Module,
    prompt_ids_list: Sequence[Sequence[int]],
    completion_ids_list: Sequence[Sequence[int]],
    temperature: float,
    device: torch.device,
    grad: bool,
) -> TokenLogprobs:
    """Each completion token's log-prob under `model` at `temperature`, its mask and the
    distribution's entropy.

    A group's G samples share their prompt, so the prompts go through the model once each (a
    batch of the distinct ones), their KV cache is spread to every sample (an index_select, so
    gradients flow back to the shared prompt), and the completions follow over it: on the demo's
    batches (16 prompts x 8 samples, ~17 prompt and 6 completion tokens) a third of the tokens of
    one forward over every whole sequence, for the same log-probs up to float rounding.
    """
    prompts = [tuple(p) for p in prompt_ids_list]
    distinct = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    which = torch.tensor([distinct[p] for p in prompts], dtype=torch.long)
    # Right padding everywhere: the causal mask already hides a row's pads from its real tokens
    # (never a fully masked query row), and positions are given, so each row's start at 0 and
    # its completion right after its own prompt. Pads are never read: any valid id (0) will do.
    p_len = torch.tensor([len(p) for p in distinct], dtype=torch.long)
    p_ids = torch.zeros((len(distinct), int(p_len.max())), dtype=torch.long)
    for i, p in enumerate(distinct):
        p_ids[i, : len(p)] = torch.tensor(p)
    p_mask = (torch.arange(p_ids.shape[1])[None, :] < p_len[:, None]).long()
    c_len = torch.tensor([len(c) for c in completion_ids_list], dtype=torch.long)
    t_max = max(int(c_len.max()), 1)
    c_ids = torch.zeros((len(prompts), t_max), dtype=torch.long)
    for i, c in enumerate(completion_ids_list):
        c_ids[i, : len(c)] = torch.tensor(list(c), dtype=torch.long)
    mask = torch.arange(t_max)[None, :] < c_len[:, None]
    c_pos = p_len[which][:, None] + torch.arange(t_max)[None, :]
    p_ids, p_mask, which, c_ids, mask, c_pos, p_len = (
        t.to(device) for t in (p_ids, p_mask, which, c_ids, mask, c_pos, p_len)
    )
    with torch.set_grad_enabled(grad):
        cache = DynamicCache()
        out = model(
            input_ids=p_ids,
            attention_mask=p_mask,
            position_ids=torch.arange(p_ids.shape[1], device=device).expand_as(p_ids),
            past_key_values=cache,
            use_cache=True,
        )
        # The logits at a prompt's last token predict the first completion token, those at
        # completion token t the next one. The last token's are not needed, but every call makes
        # exactly two forwards, whatever its lengths: ZeRO-3 ranks gather weights per forward,
        # together, so they must all make the same number.
        first = out.logits[torch.arange(len(distinct), device=device), p_len - 1][which]
        cache.reorder_cache(cast(torch.LongTensor, which))
        rest = model(
            input_ids=c_ids,
            attention_mask=torch.cat([p_mask[which], mask.long()], dim=1),
            position_ids=c_pos,
            past_key_values=cache,
            use_cache=True,
        ).logits
        logits = torch.cat([first[:, None], rest[:, :-1]], dim=1)
        logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
        token_lp = logprobs.gather(-1, c_ids[:, :, None])[:, :, 0]
    with torch.no_grad():
        entropy = -(logprobs.exp() * logprobs).sum(-1)
    zero = torch.zeros_like(token_lp)
    return TokenLogprobs(torch.where(mask, token_lp, zero), mask, torch.where(mask, entropy, zero.detach()))


def sample_tensors(samples: Sequence[TrainSample], like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """[N, T] behaviour log-probs, trainable and fresh flags of `samples`, shaped as `like`
    (their token_logprobs)."""
    behaviour = torch.zeros_like(like)
    trainable = torch.zeros(like.shape, dtype=torch.bool, device=like.device)
    fresh = torch.zeros_like(trainable)
    for j, s in enumerate(samples):
        n = len(s.completion_token_ids)
        behaviour[j, :n] = torch.tensor(s.logprobs, dtype=like.dtype)
        trainable[j, :n] = True if s.trainable is None else torch.tensor(s.trainable, dtype=torch.bool)
        fresh[j, :n] = False if s.fresh is None else torch.tensor(s.fresh, dtype=torch.bool)
    return behaviour, trainable, fresh


class TokenMean:
    """A per-token value's mean over the batch's real tokens, minibatch by minibatch."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def add(self, values: torch.Tensor) -> None:
        self.total += float(values.sum())
        self.count += values.numel()

    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class Gap(TokenMean):
    """|behaviour - proximal| log-prob over the batch's fresh tokens (TrainSample.fresh), and its max."""

    def __init__(self) -> None:
        super().__init__()
        self.max = 0.0

    def add(self, values: torch.Tensor) -> None:
        super().add(values)
        if values.numel():
            self.max = max(self.max, float(values.max()))

    def metrics(self) -> dict[str, float]:
        """Mean and max per fresh token; none when no token was fresh (nothing to compare)."""
        if not self.count:
            return {}
        return {"logprob_gap_mean": self.total / self.count, "logprob_gap_max": self.max}
