"""Prompts into token ids: the one encoding rule, and a model directory's tokenizer without torch.

The scheduler tokenizes every task's prompt but never runs a model, so it reads the directory's
`tokenizer.json` with the `tokenizers` library alone (transformers imports torch). The rollout
engine, bootstrap and evaluation hold a transformers tokenizer; `jetrl.policy.load.encode_prompt`
hands its backend to the same rule, so both sides produce the same ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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

    def __init__(
        self,
        backend: Tokenizer,
        bos_id: int | None,
        eos_id: int | None,
        chat: ChatTemplate | None = None,
        vocab_size: int | None = None,
    ):
        self.backend = backend
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.chat = chat
        # the model's embedding rows (config.json), which may pad past the tokenizer's own count
        self.vocab_size = vocab_size or backend.get_vocab_size(with_added_tokens=True)

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
        config_vocab = json.loads((p / "config.json").read_text()).get("vocab_size")
        vocab = config_vocab if isinstance(config_vocab, int) and config_vocab > 0 else None
        return cls(backend, token_id("bos_token"), token_id("eos_token"), template, vocab)

    def encode(self, text: str) -> list[int]:
        """The prompt's token ids (`prompt_ids`)."""
        return prompt_ids(self.backend, self.bos_id, text, self.chat)

    def completion_problem(self, prompt_ids: Sequence[int], token_ids: Sequence[int], text: str) -> str | None:
        """Why a prompt and completion's token ids and the completion's text cannot be one
        generation of this model; None when they can. Ids outside the embedding would crash the
        trainer; text other than the tokens' would be rewarded for what was never trained. Engines
        detokenize their own way (spaces around punctuation, a character cut at the length limit),
        so the text is compared with the decoded tokens without whitespace and replacement
        characters."""
        for what, ids in (("prompt", prompt_ids), ("completion", token_ids)):
            if bad := [t for t in ids if not 0 <= t < self.vocab_size]:
                return f"{what} token id {bad[0]} is outside the model's vocabulary of {self.vocab_size}"
        decoded = self.backend.decode(list(token_ids), skip_special_tokens=True)
        if _squeezed(decoded) != _squeezed(text):
            return f"text {text[:40]!r} is not what its tokens decode to ({decoded[:40]!r})"
        return None


def _squeezed(text: str) -> str:
    return "".join(c for c in text if not c.isspace() and c != "\ufffd")
