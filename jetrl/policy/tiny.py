"""The tiny built-in policy: a Llama-architecture causal LM small enough to train on a CPU.

It is an ordinary `LlamaForCausalLM`, so everything downstream (rollout engine, trainer,
checkpoints) treats it exactly like any Hugging Face model; only its size is special.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

__all__ = ["make_tiny_model"]


def make_tiny_model(
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int = 128,
    layers: int = 2,
    heads: int = 4,
    intermediate_size: int = 384,
    max_positions: int = 128,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A freshly initialised Llama-style model (~0.5M parameters at the defaults).

    The defaults are the tuned ones for the arithmetic demo (see examples/arithmetic.yaml).
    Embeddings are tied to the output head: at this size it saves a third of the parameters and
    trains faster. Initialisation is seeded so a bootstrap is reproducible.
    """
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    # fork_rng keeps the seeding local: callers' global RNG state is left as it was.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model
