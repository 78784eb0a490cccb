"""Embedded torch generation engine: batched sampling on any Hugging Face causal LM.

Token in, token out: requests carry prompt token ids (and, for a resumed sample, the completion
tokens earlier attempts generated) and results carry the whole completion, the behaviour
log-prob of every token and the policy version that produced it. Decoding is an explicit loop,
one forward per token for the whole batch over a KV cache, and `should_stop` is asked before
every step, so an abort (APRIL) takes effect within one token. Calls made at once from several
threads decode together as one batch (svc_rollout/coalesce.py), each with its own abort.

New weights arrive in one of two ways (`interrupt`): between two tokens (AReaL's interruptible
generation; the weights lock is taken per step), or only when no generate call is in flight
(in-flight samples finish on the old weights). Either way each token records the version that
actually produced it: after a switch the KV cache, computed by the old weights, is rebuilt over
everything so far before the next token, as AReaL does. A load holds the weights lock only for
the in-place copy: decoding the blob happens before, while generation goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from jetrl.policy.generate import left_pad
from jetrl.policy.load import copy_state, read_state_file
from jetrl.policy.temperature import logprob_temperature
from jetrl.states import FinishReason
from jetrl.tasks import Problem
from svc_rollout.api import GenRequest, GenResult
from svc_rollout.coalesce import Coalescer
from svc_rollout.gate import CallGate
from svc_rollout.results import greedy_evaluation, never_stop, set_texts, start_results

__all__ = ["TorchEngine", "draw"]


def draw(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row by inverse CDF: the first index whose cumulative mass exceeds u · total.

    `probs` [N, V] need not be normalised (a top-p cut leaves the nucleus' mass); `uniforms` [N]
    in [0, 1). A zero-probability token is never drawn: its cumulative mass equals its
    predecessor's, which is reached first. Drawing the whole batch at once replaces one
    `torch.multinomial` call per row per token, which was a fifth of a decode step's time.
    """
    cdf = probs.cumsum(-1)
    target = uniforms[:, None] * cdf[:, -1:]
    return torch.searchsorted(cdf, target, right=True)[:, 0].clamp(max=probs.shape[-1] - 1)


def _top_p_mask(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero the tail of each row outside its nucleus (the smallest set with mass >= top_p)."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    # Keep a token if the mass strictly before it is below top_p: the top token always stays.
    keep_sorted = (sorted_p.cumsum(-1) - sorted_p) < top_p[:, None]
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return probs * keep


class TorchEngine:
    """Generation on an in-process model; `version` is the policy version of its weights.

    `interrupt=True`: a new version lands between two decode steps. `interrupt=False`: a load
    waits until no generate call is in flight, and new calls wait for a pending load (so a
    stream of calls cannot starve it). `generate` may be called from several threads at once.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        version: int = 0,
        interrupt: bool = True,
        gather_s: float = 0.0,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.version = version
        self.interrupt = interrupt
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.device = next(model.parameters()).device
        self._weights_lock = threading.Lock()
        self._gate = CallGate(interrupt)
        # an idle engine waits this long for the rest of a burst of calls (worth it only when calls come
        # several at once: JETRL_ROLLOUT_CONCURRENCY > 1)
        self._coalescer = Coalescer(self._decode_batch, gather_s)

    @property
    def busy_seconds(self) -> float:
        """Wall time during which at least one generate call was decoding (not a sum over calls)."""
        return self._gate.busy_seconds

    def load_weights(self, path: Path, version: int) -> None:
        """Swap in new weights (a safetensors file, or a sharded version's index) as `version`: at
        the next token boundary, or once no generate call is in flight (finish mode)."""
        tensors = read_state_file(self.model, path)  # the slow part, outside every lock
        with self._gate.load(), self._weights_lock:
            copy_state(self.model, tensors)
            self.version = version

    def _step(self, seq: _Sequences) -> tuple[torch.Tensor, int]:
        """One forward under the weights lock: last-position logits and the version used. The
        first step, and the first after a weight switch, run over the whole sequences, once per
        distinct row (a new cache from these weights); the others feed only the newest token."""
        with self._weights_lock, torch.inference_mode():
            if seq.cache_version == self.version:
                out = self.model(
                    input_ids=seq.ids[:, -1:],
                    attention_mask=seq.mask,
                    position_ids=seq.pos[:, -1:],
                    past_key_values=seq.cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                return out.logits[:, -1, :].float(), self.version
            # A new cache: a group's G samples start from the same prompt, so the forward runs once per
            # distinct row (tokens and mask) and the cache and logits are spread back to every row.
            rows, spread = torch.unique(torch.cat([seq.ids, seq.mask], dim=1), dim=0, return_inverse=True)
            # one row index per distinct row (which of equal rows is taken does not matter)
            first = torch.empty(len(rows), dtype=torch.long, device=spread.device)
            first.scatter_(0, spread, torch.arange(len(spread), device=spread.device))
            seq.cache, seq.cache_version = DynamicCache(), self.version
            out = self.model(
                input_ids=seq.ids[first],
                attention_mask=seq.mask[first],
                position_ids=seq.pos[first],
                past_key_values=seq.cache,
                use_cache=True,
                logits_to_keep=1,
            )
            seq.cache.reorder_cache(spread)
            return out.logits[spread, -1, :].float(), self.version

    def generate(
        self, requests: Sequence[GenRequest], should_stop: Callable[[], bool] | None = None
    ) -> list[GenResult]:
        """Complete every request as one batch; a row stops on EOS, on its max_new_tokens, or
        ("aborted") when `should_stop()`, asked before every decode step, returns true."""
        results, todo = start_results(requests, self.eos_id)
        if todo:
            # concurrent calls decode together (svc_rollout/coalesce.py)
            self._coalescer.run([requests[i] for i in todo], [results[i] for i in todo], should_stop or never_stop)
        set_texts(results, self.tokenizer)
        return results

    def _decode_batch(
        self, requests: Sequence[GenRequest], results: list[GenResult], stops: Sequence[Callable[[], bool]]
    ) -> None:
        with self._gate.call():
            self._decode(requests, results, stops)

    def _decode(
        self, requests: Sequence[GenRequest], results: list[GenResult], stops: Sequence[Callable[[], bool]]
    ) -> None:
        """The decode loop: appends new tokens to `results` (which start as the prefixes); the rows
        of each `should_stop` (stops[i] is row i's) end ABORTED when it says so."""
        n = len(requests)
        by_stop: dict[int, tuple[Callable[[], bool], list[int]]] = {}
        for i, stop in enumerate(stops):
            by_stop.setdefault(id(stop), (stop, []))[1].append(i)
        rows = [[*r.prompt_token_ids, *r.prefix_token_ids] for r in requests]  # prefill over prompt + prefix
        ids, mask, pos = (t.to(self.device) for t in left_pad(rows, self.pad_id))
        greedy = torch.tensor([r.temperature == 0 for r in requests], device=self.device)
        scale = torch.tensor([logprob_temperature(r.temperature) for r in requests], device=self.device)[:, None]
        top_p = torch.tensor([r.top_p for r in requests], device=self.device)
        # Per-row uniforms, one per token to come, from a generator seeded by the request alone:
        # a request's samples do not depend on its batch neighbours. Every row of a call starts
        # together, so the k-th decode step draws row i's token with uniforms[i, k].
        steps = max(r.max_new_tokens for r in requests)
        uniforms = torch.stack(
            [torch.rand(steps, generator=torch.Generator().manual_seed(r.seed)) for r in requests]
        ).to(self.device)
        cut = (top_p < 1.0) & ~greedy  # sampled rows whose nucleus drops a tail
        any_cut = bool(cut.any())
        step = 0  # decode steps taken: no row can take more than `steps`
        new_tokens = [0] * n
        active = [True] * n
        seq = _Sequences(ids, mask, pos)
        while any(active):
            for stop, members in by_stop.values():
                if any(active[i] for i in members) and stop():
                    for i in members:
                        if active[i]:
                            results[i].finish_reason, active[i] = FinishReason.ABORTED, False
            if not any(active):
                break
            logits, version = self._step(seq)
            logprobs = torch.log_softmax(logits / scale, dim=-1)
            probs = _top_p_mask(logprobs.exp(), top_p) if any_cut else logprobs.exp()
            chosen = torch.where(greedy, logits.argmax(-1), draw(probs, uniforms[:, step]))
            # The behaviour log-prob as sampled: of the renormalised nucleus where top-p cut the
            # tail (vLLM's processed_logprobs); greedy rows keep the full distribution at T=1.
            if any_cut:
                logprobs = torch.where(cut[:, None], (probs / probs.sum(-1, keepdim=True)).log(), logprobs)
            chosen_lp = logprobs.gather(-1, chosen[:, None])[:, 0].tolist()
            for i, tok in enumerate(chosen.tolist()):
                if not active[i]:
                    continue
                res = results[i]
                res.token_ids.append(tok)
                res.logprobs.append(chosen_lp[i])
                res.versions.append(version)
                new_tokens[i] += 1
                if tok == self.eos_id:
                    res.finish_reason, active[i] = FinishReason.EOS, False
                elif new_tokens[i] >= requests[i].max_new_tokens:
                    active[i] = False
            # Finished rows still ride along (feeding a pad, masked out) to keep shapes fixed.
            seq.append(
                torch.where(torch.tensor(active, device=self.device), chosen, self.pad_id),
                torch.tensor(active, device=self.device),
            )
            step += 1

    def close(self) -> None:
        """Nothing to free: the model goes with the engine object."""

    def evaluate(
        self, problems: Sequence[Problem], *, max_new_tokens: int = 8, batch_size: int = 256, chat: bool = False
    ) -> tuple[int, int]:
        """Greedy held-out score: (number correct, number of problems)."""
        return greedy_evaluation(
            self.generate, self.tokenizer, problems, max_new_tokens=max_new_tokens, batch_size=batch_size, chat=chat
        )


@dataclass
class _Sequences:
    """A decoding batch: every token so far (left-padded prompt, prefix, new tokens), its mask and
    positions, and the KV cache with the version of the weights that computed it."""

    ids: torch.Tensor
    mask: torch.Tensor
    pos: torch.Tensor
    cache: DynamicCache | None = None
    cache_version: int | None = None

    def append(self, tokens: torch.Tensor, real: torch.Tensor) -> None:
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        self.mask = torch.cat([self.mask, real.to(self.mask.dtype)[:, None]], dim=1)
        self.pos = torch.cat([self.pos, self.pos[:, -1:] + 1], dim=1)
