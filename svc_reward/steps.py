r"""Step scores for the `process` reward: the equations a completion writes, each checked exactly,
and the two shapings (docs/design.md §6) that turn them into a return that cannot be farmed.

A step is one equality a completion writes, in text order:

- A plain equation: numbers joined by `+ - * /`, then `=` and more of the same, e.g. `48/2 = 24`,
  `16 - 3 - 4 = 9`, `$5 + $3 = $8`, `1,200*2=2,400`. A run `a = b = c` is one step per adjacent
  pair (`a = b`, then `b = c`), as in maths, so `12+7=19-5=14` claims 12+7 = 19-5 and that step is
  wrong. No parentheses in plain text, and an equation that is only part of what is written is
  not read: the tail of an expression with a word in it (`x * 2 + 3 = 7`), mixed numbers
  (`1 1/2 - 2 = ...`), a percentage (`3/6 = 50%`).
- A GSM8K calculator annotation `<<48/2=24>>`: its inside, which may use parentheses. The text
  around it (`48/2 = <<48/2=24>>24`) is the same computation and is not counted again.

In plain text only pairs with an operator on at least one side are steps (`age = 5 = 5` computes
nothing); an annotation is an explicit calculator call, so each of its pairs is one, trivial ones
(`<<125=125>>`) included. Malformed ones (`3+=4`, `<<(2+=1>>`) are ignored. Step k scores
s_k = 1.0 when both sides have the same exact value (fractions, no rounding; `*` and `/` before
`+` and `-`; signs allowed: `-3`, `+8`), else 0.0; dividing by zero is a wrong step.

Arithmetic-chain prompts (`12+7-5=`): a completion that shows its work writes the prompt's
expression or a prefix of it and goes on from the partial result, `12+7=19` then `19-5=14`.
Those are ordinary steps scored on their arithmetic alone: whether a step follows from the prompt
is not checked. The outcome term scores the answer, and the shapings below give a correct but
irrelevant step nothing (Clip) or a bounded once-only amount (Delta).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Literal, NamedTuple

__all__ = ["Step", "clip", "delta", "evaluate", "shape", "steps"]

_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_OPERAND = rf"-?\$?(?:{_NUM})"
# Bounded repetition keeps a scan linear: a long `1+1+...` with no `=` is given up on after a
# few dozen operands instead of being retried from each of them.
_EXPR = rf"{_OPERAND}(?:\s*[-+*/]\s*{_OPERAND}){{0,31}}"
# One scan for both kinds, so an annotation is consumed whole and its inside never read as plain
# text. A plain equation never starts inside a number, word or expression (the lookbehind), and
# never ends on part of something: not before a letter or `%` (`3/6 = 50%`), the fraction of a
# mixed number (`1/2 = 3 1/2`) or a space-grouped thousand (`= $12 000`).
_STEP = re.compile(
    rf"<<(?P<annotation>[^<>]*)>>"
    rf"|(?<![\w.,$+*/-])(?P<plain>{_EXPR}(?:\s*=\s*{_EXPR}){{1,16}})(?![\w%]|\.\d|[ \t]+(?:\d+/\d|\d{3}(?!\d)))"
)
# The text just before a plain equation shows it is the tail of something longer, which it must
# not be scored without: an expression with a word in it (`x * 2 + 3 = 7`, `1 – 3/4`), a product
# written with x or after a parenthesis (`400 x 3/100`, `(1/2) 278 + 11`), or a number that it
# continues (`1 1/2 - 2`, `$350 000 + ...`), unless that number ends an equation (`2+3=5 5+1=6`).
# Checked in code on a short window, because a lookbehind can neither skip spaces nor vary.
_TAIL = re.compile(r"(?:[\w)]\s*[-+*/×÷–−]|(?:\bx|\dx|×)|\)|(?:^|[^\d.,=])\$?\d(?:[\d,.]*\d)?[ \t])\s*$")
_TAIL_WINDOW = 64
_BINARY = re.compile(r"[\d.)][-+*/]")  # after normalising: an operator with an operand on its left
_TOKEN = re.compile(r"\d+(?:\.\d+)?|\.\d+|\S")
MAX_DEPTH = 32  # nested parentheses; deeper is hostile input, not arithmetic


class Step(NamedTuple):
    text: str  # normalised: no spaces, `$` or thousands commas, e.g. "48/2=24"
    holds: bool

    @property
    def score(self) -> float:
        return 1.0 if self.holds else 0.0


def evaluate(expression: str) -> Fraction:
    """The exact value of `+ - * /` arithmetic with parentheses and signs (`-3`, `+8`).

    ValueError when malformed; ZeroDivisionError on division by zero.
    """
    tokens = _TOKEN.findall(expression)
    pos = 0

    def take() -> str | None:
        nonlocal pos
        pos += 1
        return tokens[pos - 1] if pos <= len(tokens) else None

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def factor(depth: int) -> Fraction:
        negate = False
        while peek() in ("-", "+"):  # a loop, not recursion: `-----5` must not exhaust the stack
            negate ^= take() == "-"
        token = take()
        if token == "(" and depth < MAX_DEPTH:
            value = sum_(depth + 1)
            if take() != ")":
                raise ValueError("unbalanced parentheses")
        elif token is not None and token[0] in "0123456789.":
            value = Fraction(token)
        else:
            raise ValueError(f"expected a number at {token!r}")
        return -value if negate else value

    def product(depth: int) -> Fraction:
        value = factor(depth)
        while peek() in ("*", "/"):
            value = value * factor(depth) if take() == "*" else value / factor(depth)
        return value

    def sum_(depth: int) -> Fraction:
        value = product(depth)
        while peek() in ("+", "-"):
            value = value + product(depth) if take() == "+" else value - product(depth)
        return value

    value = sum_(0)
    if pos != len(tokens):
        raise ValueError(f"unexpected {tokens[pos]!r}")
    return value


def _pairs(equation: str, need_operator: bool) -> list[Step]:
    sides = re.sub(r"[\s$,]", "", equation).split("=")
    found = []
    for left, right in itertools.pairwise(sides):
        if need_operator and not (_BINARY.search(left) or _BINARY.search(right)):
            continue
        try:
            holds = evaluate(left) == evaluate(right)
        except ZeroDivisionError:
            holds = False
        except ValueError:
            continue
        found.append(Step(f"{left}={right}", holds))
    return found


def steps(text: str) -> list[Step]:
    """Every step of `text` in order (see the module docstring); [] when it writes none."""
    found: list[Step] = []
    for match in _STEP.finditer(text):
        if match["annotation"] is not None:
            found += _pairs(match["annotation"], need_operator=False)
        elif not _TAIL.search(text, max(0, match.start() - _TAIL_WINDOW), match.start()):
            found += _pairs(match["plain"], need_operator=True)
    return found


# ---- shaping (docs/design.md §6) ------------------------------------------------------------------------
# Summing raw step scores would pay for length: repeating `2+2=4` N times would earn N. Both
# shapings bound what the steps can add, whatever their number.


def clip(scores: Sequence[float], threshold: float) -> list[float]:
    """Clip: r_k = min(s_k - η, 0). Every term is <= 0, so steps can only cost: a correct step
    (s_k >= η) adds exactly 0 and repeating it adds nothing, a wrong one costs η. The price is
    that writing no steps at all is as good as writing only correct ones."""
    return [min(s - threshold, 0.0) for s in scores]


def delta(scores: Sequence[float]) -> list[float]:
    """Delta: r_k = s_k - s_{k+1}, with s_{K+1} = 0. The sum telescopes to s_1 <= 1 for any K,
    so repeating a correct step N times still sums to s_1 = 1: every repeat but the last gets
    r_k = 0. Summed into one return, the steps add s_1 alone; the r_k themselves say which
    step gained or lost correctness."""
    return [s - nxt for s, nxt in itertools.pairwise([*scores, 0.0])]


def shape(scores: Sequence[float], shaping: Literal["clip", "delta"], threshold: float) -> list[float]:
    """The per-step rewards r_k under the named shaping; `threshold` is Clip's η."""
    return clip(scores, threshold) if shaping == "clip" else delta(scores)
