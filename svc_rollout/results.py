"""What every real generation engine does around its decode loop: results that start as the
requests' prefixes, their texts, and the greedy evaluation on top of `generate`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from transformers import PreTrainedTokenizerBase

from jetrl.policy.generate import greedy_score
from jetrl.states import FinishReason
from jetrl.tasks import Problem
from svc_rollout.api import GenRequest, GenResult

__all__ = ["start_results", "set_texts", "greedy_evaluation", "never_stop"]


def never_stop() -> bool:
    """The `should_stop` of a generate call nobody aborts."""
    return False


def start_results(requests: Sequence[GenRequest], eos_id: int) -> tuple[list[GenResult], list[int]]:
    """One result per request holding its prefix (token in: returned unchanged at the head), and
    the indices of the requests still to decode: not those whose prefix already ended on EOS
    (FinishReason.EOS) or that have no token left to generate (LENGTH)."""
    results = [
        GenResult(list(r.prefix_token_ids), list(r.prefix_logprobs), list(r.prefix_versions), FinishReason.LENGTH, "")
        for r in requests
    ]
    todo = []
    for i, (req, res) in enumerate(zip(requests, results)):
        if res.token_ids[-1:] == [eos_id]:
            res.finish_reason = FinishReason.EOS
        elif req.max_new_tokens > 0:
            todo.append(i)
    return results, todo


def set_texts(results: Sequence[GenResult], tokenizer: PreTrainedTokenizerBase) -> None:
    for res in results:
        # one id list decodes to one str; transformers types decode's result str | list[str]
        res.text = tokenizer.decode(res.token_ids, skip_special_tokens=True)  # type: ignore[assignment]


def greedy_evaluation(
    generate: Callable[[Sequence[GenRequest]], list[GenResult]],
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    *,
    max_new_tokens: int,
    batch_size: int,
    chat: bool,
) -> tuple[int, int]:
    """An engine's `evaluate`: the greedy held-out score (jetrl.policy.generate.greedy_score) of
    completions from its own `generate`."""
    request = partial(GenRequest, max_new_tokens=max_new_tokens, temperature=0.0)
    return greedy_score(
        lambda prompts: [r.text for r in generate([request(p) for p in prompts])],
        tokenizer,
        problems,
        batch_size=batch_size,
        chat=chat,
    )
