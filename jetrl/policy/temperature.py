"""At which temperature a token's log-prob is taken: the rollout reports it, the trainer recomputes it."""

from __future__ import annotations

__all__ = ["logprob_temperature"]


def logprob_temperature(sampling_temperature: float) -> float:
    """The temperature of the log-probs of tokens sampled at `sampling_temperature`: the same one,
    so behaviour and trainer log-probs describe one policy; greedy decoding (0) has no such
    distribution, and both sides report it at temperature 1."""
    return sampling_temperature if sampling_temperature > 0 else 1.0
