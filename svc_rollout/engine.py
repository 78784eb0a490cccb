"""Embedded torch generation engine: batched sampling on any Hugging Face causal LM.

Token in, token out: requests carry prompt token ids and results carry completion ids, the
behaviour log-prob of every token and the policy version that produced it. Decoding is an
explicit loop, one forward per token for the whole batch over a KV cache, and the weights lock
is taken per step, so `load_weights` from another thread lands between two tokens (AReaL's
interruptible generation); each token records the version that actually produced it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from jetrl.policy.generate import left_pad
from jetrl.policy.load import encode_prompt, load_state_bytes
from jetrl.tasks import Problem
from jetrl.tasks.answers import is_correct

__all__ = ["GenRequest", "GenResult", "TorchEngine"]


@dataclass(frozen=True)
class GenRequest:
    """One completion to sample. temperature 0 = greedy; `seed` makes sampling reproducible."""

    prompt_token_ids: Sequence[int]
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0


@dataclass
class GenResult:
    """A finished completion: ids, per-token behaviour log-probs and versions, why it stopped."""

    token_ids: list[int]
    logprobs: list[float]
    versions: list[int]
    finish_reason: str  # "eos" or "length"
    text: str


def _top_p_mask(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero the tail of each row outside its nucleus (the smallest set with mass >= top_p)."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    # Keep a token if the mass strictly before it is below top_p: the top token always stays.
    keep_sorted = (sorted_p.cumsum(-1) - sorted_p) < top_p[:, None]
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return probs * keep


class TorchEngine:
    """Generation on an in-process model; `version` is the policy version of its weights."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, version: int = 0):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.version = version
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.device = next(model.parameters()).device
        self._weights_lock = threading.Lock()

    def load_weights(self, state_bytes: bytes, version: int) -> None:
        """Swap in new weights (a safetensors blob) as `version`; waits for the current token."""
        with self._weights_lock:
            load_state_bytes(self.model, state_bytes)
            self.version = version

    def _step(self, **inputs) -> tuple[torch.Tensor, int]:
        """One forward under the weights lock: last-position logits and the version used."""
        with self._weights_lock, torch.inference_mode():
            out = self.model(**inputs, use_cache=True, logits_to_keep=1)
            return out.logits[:, -1, :].float(), self.version

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        """Complete every request as one batch; stops each row on EOS or its max_new_tokens."""
        if not requests:
            return []
        n = len(requests)
        ids, mask, pos = (t.to(self.device) for t in left_pad([r.prompt_token_ids for r in requests], self.pad_id))
        temps = torch.tensor([r.temperature for r in requests], device=self.device)
        greedy = temps == 0
        # Greedy rows report log-probs at temperature 1, as the trainer will compute them.
        scale = torch.where(greedy, torch.ones_like(temps), temps)[:, None]
        top_p = torch.tensor([r.top_p for r in requests], device=self.device)
        gens = [torch.Generator(device=self.device).manual_seed(r.seed) for r in requests]
        results = [GenResult([], [], [], "length", "") for _ in requests]
        active = [r.max_new_tokens > 0 for r in requests]
        cache = DynamicCache()
        inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "past_key_values": cache}
        next_pos = pos[:, -1:] + 1
        while any(active):
            logits, version = self._step(**inputs)
            logprobs = torch.log_softmax(logits / scale, dim=-1)
            probs = _top_p_mask(logprobs.exp(), top_p)
            chosen = logits.argmax(-1)
            for i in range(n):
                # Per-row generators: a request's samples do not depend on its batch neighbours.
                if active[i] and not greedy[i]:
                    chosen[i] = torch.multinomial(probs[i], 1, generator=gens[i])[0]
            chosen_lp = logprobs.gather(-1, chosen[:, None])[:, 0].tolist()
            for i, tok in enumerate(chosen.tolist()):
                if not active[i]:
                    continue
                res = results[i]
                res.token_ids.append(tok)
                res.logprobs.append(chosen_lp[i])
                res.versions.append(version)
                if tok == self.eos_id:
                    res.finish_reason, active[i] = "eos", False
                elif len(res.token_ids) >= requests[i].max_new_tokens:
                    active[i] = False
            # Finished rows still ride along (feeding a pad, masked out) to keep shapes fixed.
            feed = torch.where(torch.tensor(active, device=self.device), chosen, self.pad_id)
            mask = torch.cat([mask, torch.tensor(active, device=self.device, dtype=mask.dtype)[:, None]], dim=1)
            inputs = {"input_ids": feed[:, None], "attention_mask": mask, "position_ids": next_pos, "past_key_values": cache}
            next_pos = next_pos + 1
        for res in results:
            res.text = self.tokenizer.decode(res.token_ids, skip_special_tokens=True)
        return results

    def evaluate(self, problems: Sequence[Problem], *, max_new_tokens: int = 8, batch_size: int = 256) -> tuple[int, int]:
        """Greedy held-out score: (number correct, number of problems)."""
        correct = 0
        for start in range(0, len(problems), batch_size):
            chunk = problems[start : start + batch_size]
            requests = [GenRequest(encode_prompt(self.tokenizer, p.prompt), max_new_tokens, temperature=0.0) for p in chunk]
            correct += sum(is_correct(p, r.text) for p, r in zip(chunk, self.generate(requests)))
        return correct, len(problems)
