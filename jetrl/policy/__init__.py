"""Policy models and tokenizers: the tiny built-in policy, and loading any local HF causal LM."""

from jetrl.policy.load import (
    PolicyLoadError,
    encode_prompt,
    load_policy,
    load_state_bytes,
    load_tokenizer,
    save_policy,
    sha256,
    state_to_bytes,
)
from jetrl.policy.tiny import make_tiny_model
from jetrl.policy.tokenizer import make_char_tokenizer

__all__ = [
    "PolicyLoadError",
    "encode_prompt",
    "load_policy",
    "load_state_bytes",
    "load_tokenizer",
    "make_char_tokenizer",
    "make_tiny_model",
    "save_policy",
    "sha256",
    "state_to_bytes",
]
