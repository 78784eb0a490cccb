"""Reference decoding without a KV cache, and the greedy held-out score every engine uses.

Deliberately the simplest correct decoder: every step re-runs the whole sequence. The
bootstrap uses it to score version 0 and the rewards bench to sample version 0 (jetrl must not
import a service), and the engine tests use it as the ground truth a KV-cache loop must
reproduce token by token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from jetrl.policy.load import encode_prompt
from jetrl.tasks import Problem
from jetrl.tasks.answers import is_correct

__all__ = ["left_pad", "complete", "greedy_score", "heldout_accuracy"]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids) for left-padded rows; real tokens start at position 0."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


@torch.inference_mode()
def complete(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    *,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Completion ids per prompt (EOS included when produced), no cache: greedy at temperature 0,
    else sampled at `temperature` from `generator`."""
    device = next(model.parameters()).device
    seqs = [list(p) for p in prompts]
    done = [False] * len(seqs)
    out: list[list[int]] = [[] for _ in seqs]
    for _ in range(max_new_tokens):
        ids, mask, pos = (t.to(device) for t in left_pad(seqs, pad_id))
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1, :].float()
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            tokens = torch.multinomial(probs, 1, generator=generator)[:, 0].tolist()
        else:
            tokens = logits.argmax(-1).tolist()
        for i, tok in enumerate(tokens):
            if not done[i]:
                out[i].append(tok)
                done[i] = tok == eos_id
            # A finished row keeps growing so the batch stays rectangular; rows never attend
            # to each other and its extra tokens are never read.
            seqs[i].append(tok)
        if all(done):
            break
    return out


def greedy_score(
    complete: Callable[[list[list[int]]], list[str]],
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    *,
    batch_size: int = 256,
    chat: bool = False,
) -> tuple[int, int]:
    """(number correct, number of problems) of greedy completions: `complete` maps a batch of
    prompt ids to their completions' texts, `batch_size` prompts at a time; with `chat`, each
    prompt goes through the model's chat template. Every engine's evaluation and the bootstrap's."""
    correct = 0
    for start in range(0, len(problems), batch_size):
        chunk = problems[start : start + batch_size]
        texts = complete([encode_prompt(tokenizer, p.prompt, chat) for p in chunk])
        correct += sum(is_correct(p, t) for p, t in zip(chunk, texts))
    return correct, len(problems)


def heldout_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    *,
    max_new_tokens: int,
    batch_size: int = 256,
) -> float:
    """Fraction of `problems` whose greedy completion (`complete`) `is_correct`."""

    def texts(prompts: list[list[int]]) -> list[str]:
        ids = complete(
            model, prompts, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, max_new_tokens=max_new_tokens
        )
        return tokenizer.batch_decode(ids, skip_special_tokens=True)

    correct, total = greedy_score(texts, tokenizer, problems, batch_size=batch_size)
    return correct / max(total, 1)
