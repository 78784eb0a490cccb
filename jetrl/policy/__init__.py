"""Policy models and tokenizers: the tiny built-in policy, and loading any local HF causal LM.

Names load on first use (PEP 562): `jetrl.policy.prompts` needs no torch, and a service that only
tokenizes (the scheduler) must not pay for importing it through this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "PolicyLoadError": "jetrl.policy.prompts",
    "encode_prompt": "jetrl.policy.load",
    "load_policy": "jetrl.policy.load",
    "load_state_bytes": "jetrl.policy.load",
    "load_tokenizer": "jetrl.policy.load",
    "save_policy": "jetrl.policy.load",
    "sha256": "jetrl.policy.load",
    "state_to_bytes": "jetrl.policy.load",
    "make_tiny_model": "jetrl.policy.tiny",
    "make_char_tokenizer": "jetrl.policy.tokenizer",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'jetrl.policy' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
