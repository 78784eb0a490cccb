"""Answer extraction and checking: exact numeric match for arithmetic and GSM8K.

Numbers are compared as exact fractions (no float rounding): `1,000`, `1000.0` and `1000` are
equal; `-3` and `3` are not. The label-free rewards' vote (`answer_of`, `majority_answer`) lives
here too, so the reward servers and the bench that measures their labels read answers alike.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jetrl.tasks import Problem

__all__ = ["answer_of", "extract_final_number", "gsm8k_reference", "is_correct", "majority_answer", "numbers_equal"]

# An optional sign, digits with optional thousands commas, an optional decimal part.
_NUMBER = re.compile(r"-?\d(?:[\d,]*\d)?(?:\.\d+)?")
_GSM8K_MARK = "####"


def extract_final_number(text: str) -> str | None:
    """The last number in `text` (after a `####` marker when there is one), commas removed.

    Returns None when there is no number: an empty answer never matches anything.
    """
    if _GSM8K_MARK in text:
        text = text.rsplit(_GSM8K_MARK, 1)[1]
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


def gsm8k_reference(answer_text: str) -> str:
    """The reference answer of a GSM8K `answer` field: the number on its final `#### n` line."""
    if _GSM8K_MARK not in answer_text:
        raise ValueError("GSM8K answer has no '#### n' line")
    number = extract_final_number(answer_text)
    if number is None:
        raise ValueError("GSM8K answer's '####' line holds no number")
    return number


def _as_fraction(s: str) -> Fraction | None:
    try:
        return Fraction(s.replace(",", "").strip())
    except (ValueError, ZeroDivisionError):
        return None


def numbers_equal(a: str | None, b: str | None) -> bool:
    """True when both strings parse as numbers with exactly the same value."""
    if a is None or b is None:
        return False
    fa, fb = _as_fraction(a), _as_fraction(b)
    return fa is not None and fb is not None and fa == fb


def is_correct(problem: Problem, completion: str) -> bool:
    """Whether the final number of `completion` equals the problem's reference answer."""
    return numbers_equal(extract_final_number(completion), problem.answer)


def answer_of(text: str) -> str | None:
    """The canonical answer of a completion (its final number, written `str(Fraction)`: `1,000`,
    `1000.0` -> `1000`, `2.50` -> `5/2`), or None when it has none."""
    number = extract_final_number(text)
    return None if number is None or (value := _as_fraction(number)) is None else str(value)


def majority_answer(answers: Iterable[str | None]) -> str | None:
    """The most frequent answer, a tie to the numerically smallest, so the same votes always give
    the same label; None (no answer) never wins, and no answers at all give None."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return min((a for a, c in counts.items() if c == top), key=Fraction)
