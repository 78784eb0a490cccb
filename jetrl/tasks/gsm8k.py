"""GSM8K-format JSONL task: `question`, and `answer` whose last line is `#### n`.

The first `heldout_size` problems of a seeded shuffle are the evaluation set; the rest, in a
fresh seeded order each epoch, are the training stream. Malformed lines fail loudly with their
line number, before any training starts.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from jetrl.config import TaskSpec
from jetrl.tasks import Problem
from jetrl.tasks.answers import gsm8k_reference

__all__ = ["Gsm8kTask", "load_gsm8k", "format_prompt"]


def format_prompt(question: str) -> str:
    """The plain-text prompt given to the policy for a GSM8K question."""
    return f"Question: {question.strip()}\nAnswer:"


def load_gsm8k(path: str | Path) -> list[Problem]:
    """Every problem of a GSM8K JSONL file, prompt_id = `gsm8k-<line number>`."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"GSM8K file {p} does not exist")
    problems: list[Problem] = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            problems.append(Problem(f"gsm8k-{lineno}", format_prompt(row["question"]), gsm8k_reference(row["answer"])))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{p}:{lineno}: not a GSM8K record ({exc})") from None
    if not problems:
        raise ValueError(f"{p} holds no problems")
    return problems


class Gsm8kTask:
    """A finite problem file split into a held-out set and an endlessly reshuffled train set."""

    name = "gsm8k"

    def __init__(self, spec: TaskSpec):
        assert spec.path is not None  # TaskSpec validation guarantees it for gsm8k
        problems = load_gsm8k(spec.path)
        if spec.heldout_size >= len(problems):
            raise ValueError(f"heldout_size {spec.heldout_size} leaves no training problems in {spec.path} ({len(problems)})")
        self.spec = spec
        order = list(range(len(problems)))
        random.Random(f"gsm8k:{spec.seed}:split").shuffle(order)
        self._heldout = [problems[i] for i in order[: spec.heldout_size]]
        self._train = [problems[i] for i in order[spec.heldout_size :]]

    def train_problem(self, index: int) -> Problem:
        """Training problem number `index`; epoch `index // n` uses its own seeded order."""
        if index < 0:
            raise ValueError("problem index must be >= 0")
        epoch, pos = divmod(index, len(self._train))
        order = list(range(len(self._train)))
        random.Random(f"gsm8k:{self.spec.seed}:epoch:{epoch}").shuffle(order)
        return self._train[order[pos]]

    def heldout(self) -> list[Problem]:
        """The fixed evaluation set (`heldout_size` problems, disjoint from training)."""
        return list(self._heldout)
