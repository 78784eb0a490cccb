"""GSM8K-format JSONL task: `question`, and `answer` whose last line is `#### n`.

An analogous rephrasing of each question (Co-Reward's second view) comes from a column of the
same file (`task.rephrase_field`, default `rephrased_question`) or from a parallel JSONL file
(`task.rephrase_path`, its line i holding the `question` that rephrases line i).

The first `heldout_size` problems of a seeded shuffle are the evaluation set; the rest, in a
fresh seeded order each epoch, are the training stream. Malformed lines fail loudly with their
line number, before any training starts.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from jetrl.spec_sections import TaskSpec
from jetrl.tasks.answers import gsm8k_reference
from jetrl.tasks.problem import Problem

__all__ = ["Gsm8kTask", "load_gsm8k", "format_prompt"]


def format_prompt(question: str) -> str:
    """The plain-text prompt given to the policy for a GSM8K question."""
    return f"Question: {question.strip()}\nAnswer:"


def _rows(p: Path) -> list[tuple[int, dict]]:
    """(line number, record) of every non-blank line of a JSONL file."""
    if not p.is_file():
        raise FileNotFoundError(f"JSONL file {p} does not exist")
    rows = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{p}:{lineno}: not JSON ({exc})") from None
    return rows


def load_gsm8k(
    path: str | Path, rephrase_field: str = "rephrased_question", rephrase_path: str | Path | None = None
) -> list[Problem]:
    """Every problem of a GSM8K JSONL file, prompt_id = `gsm8k-<line number>`, with its
    rephrasing from `rephrase_field` or, line by line, from the file `rephrase_path`."""
    p = Path(path)
    rows = _rows(p)
    rephrased: list[str | None] = [None] * len(rows)
    if rephrase_path is not None:
        other = _rows(Path(rephrase_path))
        if len(other) != len(rows):
            raise ValueError(
                f"{rephrase_path} has {len(other)} records, {p} has {len(rows)}: they must pair line by line"
            )
        for i, (lineno, row) in enumerate(other):
            if not isinstance(row, dict) or not isinstance(row.get("question"), str):
                raise ValueError(f"{rephrase_path}:{lineno}: no `question` string")
            rephrased[i] = row["question"]
    problems: list[Problem] = []
    for i, (lineno, row) in enumerate(rows):
        try:
            view = rephrased[i] or row.get(rephrase_field)
            problems.append(
                Problem(
                    f"gsm8k-{lineno}",
                    format_prompt(row["question"]),
                    gsm8k_reference(row["answer"]),
                    format_prompt(view) if view else None,
                )
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{p}:{lineno}: not a GSM8K record ({exc})") from None
    if not problems:
        raise ValueError(f"{p} holds no problems")
    return problems


class Gsm8kTask:
    """A finite problem file split into a held-out set and an endlessly reshuffled train set."""

    name = "gsm8k"

    def __init__(self, spec: TaskSpec):
        assert spec.path is not None  # TaskSpec validation guarantees it for gsm8k
        problems = load_gsm8k(spec.path, spec.rephrase_field, spec.rephrase_path)
        self.has_analogous = all(p.analogous for p in problems)
        if spec.heldout_size >= len(problems):
            raise ValueError(
                f"heldout_size {spec.heldout_size} leaves no training problems in {spec.path} ({len(problems)})"
            )
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
