r"""Answer extraction and checking: exact numeric match for arithmetic and GSM8K.

The answer rule: a completion's answer is its last number; after its last `####` when it has
one, else inside its last `\boxed{}` when it has one. Numbers compare as exact fractions (no
float rounding). What counts as one number:

- digits with an optional decimal part (`3.50`, `.5`); thousands separators only as commas
  between groups of three (`1,000`, `1,234,567.5`). Digits joined by commas in any other way
  (`1,8`, `5,4,0`, `12,34`) could be a list or a decimal comma: the token is read as one number
  that equals nothing, so a completion ending on it is wrong whatever the reference;
- a sign written directly before it: `-`, `+`, and the minus signs and dashes U+2212 (−),
  U+2013 (–), U+FE63 (﹣) and U+FF0D (－) all read as a sign (`−18` is -18); one written apart
  (`- 18`, a list bullet) is not;
- a fraction: `a/b` (spaces allowed around the slash) and LaTeX `\frac{a}{b}`, `\dfrac`,
  `\tfrac` (`\frac12` too) are the one number a/b, never their denominator. A LaTeX fraction whose
  parts are not plain numbers (`\frac{\sqrt{2}}{2}`), or any fraction over zero, equals nothing;
- a percent sign is not read: `18%` is 18.

The label-free rewards' vote (`answer_of`, `majority_answer`) lives here too, so the reward
servers and the bench that measures their labels read answers alike.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from fractions import Fraction
from itertools import islice
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from jetrl.tasks.problem import Problem

__all__ = [
    "answer_of",
    "ascii_signs",
    "extract_final_number",
    "gsm8k_reference",
    "is_correct",
    "majority_answer",
    "numbers_equal",
    "read_number",
]

_MINUS_SIGNS = "\u2212\u2013\ufe63\uff0d"  # minus sign, en dash, small and fullwidth hyphen-minus
_SIGN = f"[-+{_MINUS_SIGNS}]"
_UNSIGNED = r"(?:\d(?:[\d,]*\d)?(?:\.\d+)?|\.\d+)"
_GROUPED = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\.\d+|\d+(?:\.\d+)?")
# one token: a LaTeX fraction command (its arguments are read by hand: they nest), or a signed
# number (a sign before a dollar sign too: `-$18`), optionally over another
_TOKEN = re.compile(
    rf"(?P<fsign>{_SIGN})?\\[dt]?frac(?![A-Za-z])"
    rf"|(?:(?P<sign>{_SIGN})(?:\\?\$)?)?(?P<num>{_UNSIGNED})(?:\s*/\s*(?P<dsign>{_SIGN})?(?P<den>{_UNSIGNED}))?"
)
_SIGNED = re.compile(rf"\s*(?P<sign>{_SIGN})?(?P<num>{_UNSIGNED})\s*")
_LATEX_ARG = re.compile(r"\s*(?:\\[A-Za-z]+|.)", re.DOTALL)
_TO_HYPHEN = str.maketrans(dict.fromkeys(_MINUS_SIGNS, "-"))
_BRACES = re.compile("[{}]")
_LATEX_COMMA = "{,}"  # LaTeX's thousands comma: `1{,}000`
_GSM8K_MARK = "####"
_BOXED = "\\boxed{"


class _Span(NamedTuple):
    """Where one number is written; read (`_read`) only when it counts, since a long text holds
    many and only its last is the answer."""

    match: re.Match
    end: int
    args: tuple[str | None, str | None] = (None, None)  # a LaTeX fraction's arguments (None: missing)


def _unsigned(digits: str) -> Fraction | None:
    """A number's value; None for commas that do not separate thousands."""
    return Fraction(digits.replace(",", "")) if _GROUPED.fullmatch(digits) else None


def _signed(sign: str | None, value: Fraction | None) -> Fraction | None:
    return None if value is None else (-value if sign and sign != "+" else value)


def _over(numerator: Fraction | None, denominator: Fraction | None) -> Fraction | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _closing(text: str, opening: int) -> int:
    """Where the `{` at `opening` closes (the text's end when it never does)."""
    depth = 0
    for brace in _BRACES.finditer(text, opening):
        depth += 1 if brace.group() == "{" else -1
        if depth == 0:
            return brace.start()
    return len(text)


def _latex_fraction(text: str, command: re.Match) -> _Span:
    """The `\\frac` command matched, with its two arguments (`{...}`, or one character or command)."""
    args: list[str | None] = []
    pos = command.end()
    for _ in range(2):
        arg = _LATEX_ARG.match(text, pos)
        if arg is None:  # the text ends first
            args.append(None)
        elif arg.group().strip() == "{":
            close = _closing(text, arg.end() - 1)
            args.append(text[arg.end() : close])
            pos = close + 1
        else:
            args.append(arg.group())
            pos = arg.end()
    return _Span(command, min(pos, len(text)), (args[0], args[1]))


def _spans(text: str) -> Iterator[_Span]:
    """Every number of `text` (with `{,}` already read as `,`), left to right."""
    pos = 0
    while True:
        for m in _TOKEN.finditer(text, pos):
            if m["num"] is None:  # a LaTeX fraction: its arguments end where the braces say
                span = _latex_fraction(text, m)
                yield span
                pos = span.end
                break
            yield _Span(m, m.end())
        else:
            return


def _argument(arg: str | None) -> Fraction | None:
    number = _SIGNED.fullmatch(arg) if arg is not None else None
    return _signed(number["sign"], _unsigned(number["num"])) if number else None


def _read(text: str, span: _Span) -> tuple[str, Fraction | None]:
    """The number at `span`: written canonically (as written when it equals nothing), its value."""
    m = span.match
    if m["num"] is None:
        value = _signed(m["fsign"], _over(_argument(span.args[0]), _argument(span.args[1])))
    elif m["den"] is not None:
        value = _over(_signed(m["sign"], _unsigned(m["num"])), _signed(m["dsign"], _unsigned(m["den"])))
    else:
        value = _signed(m["sign"], _unsigned(m["num"]))
        if value is not None:  # the digits as written (`18.50` stays `18.50`), the sign canonical
            return ("-" if value < 0 else "") + m["num"].replace(",", ""), value
    return (str(value) if value is not None else text[m.start() : span.end]), value


def _final(text: str) -> tuple[str, Fraction | None] | None:
    """The answer: the last number after the last `####`, else in the last `\\boxed{}`, else
    anywhere; None when there is none."""
    if _GSM8K_MARK in text:
        text = text.rsplit(_GSM8K_MARK, 1)[1]
    elif (at := text.rfind(_BOXED)) >= 0:
        text = text[at + len(_BOXED) : _closing(text, at + len(_BOXED) - 1)]
    text = text.replace(_LATEX_COMMA, ",")
    last = None
    for span in _spans(text):
        last = span
    return _read(text, last) if last is not None else None


def extract_final_number(text: str) -> str | None:
    """The answer of `text` under the module's rule, written canonically (`1,234` -> `1234`,
    `−3` -> `-3`, `\\frac{10}{4}` -> `5/2`), or as written when it equals nothing (`1,8`).

    Returns None when there is no number: an empty answer never matches anything.
    """
    final = _final(text)
    return final[0] if final is not None else None


def read_number(s: str) -> Fraction | None:
    """The value of `s` when it is exactly one number under the module's rule (nothing else but
    space around it), else None."""
    s = s.replace(_LATEX_COMMA, ",")
    found = list(islice(_spans(s), 2))
    if len(found) != 1 or s[: found[0].match.start()].strip() or s[found[0].end :].strip():
        return None
    return _read(s, found[0])[1]


def ascii_signs(text: str) -> str:
    """`text` with every minus sign the rule reads written `-`, for readers that know only that one."""
    return text.translate(_TO_HYPHEN)


def gsm8k_reference(answer_text: str) -> str:
    """The reference answer of a GSM8K `answer` field: the number on its final `#### n` line."""
    if _GSM8K_MARK not in answer_text:
        raise ValueError("GSM8K answer has no '#### n' line")
    number = extract_final_number(answer_text)
    if number is None:
        raise ValueError("GSM8K answer's '####' line holds no number")
    return number


def numbers_equal(a: str | None, b: str | None) -> bool:
    """True when both strings are numbers (`read_number`) with exactly the same value."""
    if a is None or b is None:
        return False
    fa, fb = read_number(a), read_number(b)
    return fa is not None and fb is not None and fa == fb


def is_correct(problem: Problem, completion: str) -> bool:
    """Whether the final number of `completion` equals the problem's reference answer."""
    return numbers_equal(extract_final_number(completion), problem.answer)


def answer_of(text: str) -> str | None:
    """The canonical answer of a completion (its final number, written `str(Fraction)`: `1,000`,
    `1000.0` -> `1000`, `2.50` -> `5/2`), or None when it has none or it equals nothing."""
    final = _final(text)
    return None if final is None or final[1] is None else str(final[1])


def majority_answer(answers: Iterable[str | None]) -> str | None:
    """The most frequent answer, a tie to the numerically smallest, so the same votes always give
    the same label; None (no answer) never wins, and no answers at all give None."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return min((a for a, c in counts.items() if c == top), key=Fraction)
