"""What every real generation engine does around its decode loop: results that start as the
requests' prefixes, and their texts."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from jetrl.states import FinishReason
from svc_rollout.api import GenRequest, GenResult

__all__ = ["start_results", "set_texts"]


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
