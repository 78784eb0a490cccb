"""Chat templates: a prompt given as the user's turn of the model's own template, with the
assistant's turn opened after it (`task.chat_template`, for instruction-tuned models).

The template is the one the model directory ships (`chat_template.jinja`, or `chat_template` in
`tokenizer_config.json`), rendered here with jinja2 in a sandbox as transformers renders it, so
the scheduler (which has no transformers) and the rollout workers (which hold a transformers
tokenizer) make the same text from a prompt, hence the same token ids.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from pathlib import Path

from jinja2 import Template
from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["ChatTemplate", "read_chat_template"]


def read_chat_template(model_dir: Path) -> str | None:
    """The directory's chat template source, or None when it ships none."""
    if (model_dir / "chat_template.jinja").is_file():
        return (model_dir / "chat_template.jinja").read_text()
    config = model_dir / "tokenizer_config.json"
    found = json.loads(config.read_text()).get("chat_template") if config.is_file() else None
    if isinstance(found, list):  # several named templates: the default one
        found = next((t.get("template") for t in found if t.get("name") == "default"), None)
    return found if isinstance(found, str) else None


def _raise(message: str) -> None:
    raise TemplateError(message)


@functools.cache
def _compiled(source: str) -> Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


class ChatTemplate:
    """A model's chat template with the special tokens it refers to."""

    def __init__(self, source: str, bos_token: str | None, eos_token: str | None):
        self.template = _compiled(source)
        self.tokens = {"bos_token": bos_token or "", "eos_token": eos_token or ""}

    def render(self, prompt: str) -> str:
        """`prompt` as the user's turn, the assistant's turn opened: the text the model continues."""
        messages = [{"role": "user", "content": prompt}]
        return self.template.render(messages=messages, add_generation_prompt=True, **self.tokens)
