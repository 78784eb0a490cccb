"""A tiny random policy whose distributions are far from uniform, for the engine tests of both
sides (the rollout engine samples from it, the trainer's computes its log-probs)."""

from __future__ import annotations

import torch

from jetrl.policy import make_char_tokenizer, make_tiny_model

TOK = make_char_tokenizer()


def spread_model(seed=0, std=0.3):
    """A tiny Llama with larger-than-default random weights (in train mode, as made)."""
    model = make_tiny_model(TOK, hidden_size=32, layers=2, heads=2, intermediate_size=64, max_positions=64, seed=seed)
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std)
    return model
