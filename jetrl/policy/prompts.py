"""Prompts into token ids: the one encoding rule, and a model directory's tokenizer without torch.

The scheduler tokenizes every task's prompt but never runs a model, so it reads the directory's
`tokenizer.json` with the `tokenizers` library alone (transformers imports torch). The rollout
engine, bootstrap and evaluation hold a transformers tokenizer; `jetrl.policy.load.encode_prompt`
hands its backend to the same rule, so both sides produce the same ids.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from jetrl.policy.chat import ChatTemplate, read_chat_template

__all__ = ["PolicyLoadError", "PromptTokenizer", "model_dir", "prompt_ids"]


class PolicyLoadError(ValueError):
    """The directory is missing or is not a Hugging Face causal LM with its tokenizer."""


def model_dir(path: str | Path) -> Path:
    """`path` as a directory that looks like a Hugging Face model, or a PolicyLoadError saying why not."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise PolicyLoadError(
            f"policy directory {p} does not exist; make one with "
            f"`python -m jetrl.policy.bootstrap {p}` or point model.path at a Hugging Face model directory"
        )
    if not (p / "config.json").is_file():
        raise PolicyLoadError(f"{p} is not a Hugging Face model directory (no config.json)")
    return p


def prompt_ids(backend: Tokenizer, bos_id: int | None, text: str, chat: ChatTemplate | None = None) -> list[int]:
    """The token ids of a prompt, the one encoding used everywhere: bootstrap, rollout, evaluation.

    A model is trained on prompts in one encoding and must be sampled and scored in that same
    encoding. Keep the tokenizer's own leading special token (BOS for Llama-style tokenizers and
    the built-in char tokenizer), drop any trailing one (an EOS or SEP some tokenizers append):
    the completion continues the prompt, so nothing may close it. Prompt text that spells a
    special token ("<eos>") stays text, never a control token.

    With `chat`, the prompt is first rendered as the user's turn of the model's chat template;
    the template's own special tokens (turn markers, its BOS if it writes one) are control tokens.
    """
    if chat is not None:
        return backend.encode(chat.render(text), add_special_tokens=False).ids
    split = backend.encode_special_tokens
    backend.encode_special_tokens = True
    try:
        body = backend.encode(text, add_special_tokens=False).ids
        if bos_id is not None and body[:1] != [bos_id] and backend.encode(text).ids[:1] == [bos_id]:
            return [bos_id, *body]
        return body
    finally:
        backend.encode_special_tokens = split


class PromptTokenizer:
    """A model directory's fast tokenizer, loaded from its files with no transformers and no torch."""

    def __init__(self, backend: Tokenizer, bos_id: int | None, eos_id: int | None, chat: ChatTemplate | None = None):
        self.backend = backend
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.chat = chat

    @classmethod
    def load(cls, path: str | Path, chat: bool = False) -> PromptTokenizer:
        """The directory's tokenizer; with `chat`, prompts go through its chat template."""
        p = model_dir(path)
        if not (p / "tokenizer.json").is_file():
            raise PolicyLoadError(f"{p} has no tokenizer.json (a fast tokenizer); save the tokenizer with transformers")
        try:
            backend = Tokenizer.from_file(str(p / "tokenizer.json"))
        except Exception as exc:
            raise PolicyLoadError(f"cannot load a tokenizer from {p}: {exc}") from exc
        special: dict[str, str | dict] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the config wins, as in transformers
            if (p / name).is_file():
                found = json.loads((p / name).read_text())
                special |= {k: v for k, v in found.items() if k in ("bos_token", "eos_token")}

        def token(key: str) -> str | None:
            found = special.get(key)
            return found.get("content") if isinstance(found, dict) else found

        def token_id(key: str) -> int | None:
            content = token(key)
            return backend.token_to_id(content) if content else None

        template = None
        if chat:
            source = read_chat_template(p)
            if source is None:
                raise PolicyLoadError(f"{p} ships no chat template; set task.chat_template: false")
            template = ChatTemplate(source, token("bos_token"), token("eos_token"))
        return cls(backend, token_id("bos_token"), token_id("eos_token"), template)

    def encode(self, text: str) -> list[int]:
        """The prompt's token ids (`prompt_ids`)."""
        return prompt_ids(self.backend, self.bos_id, text, self.chat)
