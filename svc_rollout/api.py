"""The generation engine's seam: what the rollout worker, its server and the policies ask of an
engine, and nothing else. The torch engine (svc_rollout/engine.py) and the simulated one
(svc_rollout/simulated.py) implement it; a new engine implements it too (docs/howto/add-an-engine.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from transformers import PreTrainedTokenizerBase

from jetrl.states import FinishReason
from jetrl.tasks import Problem

__all__ = ["GenRequest", "GenResult", "GenerationEngine"]


@dataclass(frozen=True)
class GenRequest:
    """One completion to sample. temperature 0 = greedy; `seed` makes sampling reproducible.

    A resumed sample carries the completion tokens earlier attempts generated (`prefix_*`, token
    in: never re-tokenised); they are fed after the prompt and returned unchanged at the head
    of the result. `max_new_tokens` counts only the tokens still to generate after the prefix.
    """

    prompt_token_ids: Sequence[int]
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    prefix_token_ids: Sequence[int] = ()
    prefix_logprobs: Sequence[float] = ()
    prefix_versions: Sequence[int] = ()


@dataclass
class GenResult:
    """A completion (prefix included): ids, per-token behaviour log-probs and versions, why it stopped."""

    token_ids: list[int]
    logprobs: list[float]
    versions: list[int]
    finish_reason: FinishReason  # ABORTED: a partial sample, to be resumed
    text: str


class GenerationEngine(Protocol):
    """Generates completions token-in, token-out, with every token's behaviour log-prob and version.

    Thread-safety: `generate` and `evaluate` run on worker threads, several at once; `load_weights`
    may be called between any two decode steps (interrupt) or between calls (finish), as the engine
    was built to do.
    """

    tokenizer: PreTrainedTokenizerBase
    version: int  # the policy version of the weights it generates with now

    @property
    def busy_seconds(self) -> float:
        """Wall time spent generating (for throughput and utilisation)."""

    def load_weights(self, path: Path, version: int) -> None:
        """Take a new version's weights (a local, verified safetensors file) in place."""

    def generate(self, requests: Sequence[GenRequest], should_stop: Callable[[], bool] = ...) -> list[GenResult]:
        """One result per request, in order; asks `should_stop` before every decode step and ends
        the still-running ones as FinishReason.ABORTED (their tokens so far kept) when it is true."""

    def close(self) -> None:
        """Free what the engine holds beyond its Python objects (vLLM's processes); called once
        its run has ended, after which it is not called again."""

    def evaluate(
        self, problems: Sequence[Problem], *, max_new_tokens: int = 8, batch_size: int = 256, chat: bool = False
    ) -> tuple[int, int]:
        """(correct, total) of greedy answers on `problems` (with `chat`, prompts through the
        model's chat template, as the run's tasks were given)."""
