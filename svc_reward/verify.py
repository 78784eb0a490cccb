r"""The `verify` reward: does a completion's final answer equal the reference answer?

The rule, in order:

1. The reference answer is the number on a GSM8K `#### n` line when the reference has one (a
   whole GSM8K `answer` field may be sent), otherwise the reference text itself: a number, or
   maths such as `\frac{1}{2}`.
2. An empty completion has no answer: reward 0, detail "no answer".
3. Exact numbers, when the reference is a number and the completion has no `\boxed{}`: the
   completion's answer is its last number, or the last one after its last `####`
   (`jetrl.tasks.answers`, which also says what one number is). That is the rule held-out
   accuracy is measured with, so the reward trains exactly what evaluation counts: `37+45=`
   completed with `82` scores 1, `82 and 7` scores 0 (it ends on a wrong number). Numbers
   compare as exact fractions: `1,234` = `1234.0` = `1234`, `3.50` = `3.5`, `\frac{5}{2}` = `5/2`
   = `2.5`, `−3` = `-3` ≠ `3`; `1,8` (not a thousands group) equals nothing.
4. Otherwise math-verify: the last `\boxed{}`/LaTeX/plain expression of the completion against
   the reference, compared symbolically (`\boxed{\frac{1}{2}}` = `0.5`), the minus signs of rule 3
   read as minus there too. Only the last MAX_MATH_CHARS characters are parsed: the answer is at
   the end, and parsing time grows with the input.

Reward 1.0 when equal, 0.0 otherwise; `detail` says why.

math-verify can spin for ever on short hostile inputs (`\boxed{9^{9^{9^{9}}}}`), and its own
timeouts use signal.alarm, which works only on a process's main thread. So `math_score` takes
the timeout as a parameter: the server runs it in worker processes with the timeouts on (see
`svc_reward.server.MathPool`); an in-process caller passes None and must trust its input.
"""

from __future__ import annotations

from typing import NamedTuple

from jetrl.tasks.answers import ascii_signs, extract_final_number, gsm8k_reference, numbers_equal, read_number

__all__ = ["Score", "MAX_MATH_CHARS", "reference_answer", "exact_score", "math_score", "score"]

# Measured: math-verify parses 2,000 characters of adversarial LaTeX in about 0.2 s; 40,000
# characters of `\boxed{1+1+...}` took 6 s.
MAX_MATH_CHARS = 2000
NO_ANSWER = "no answer"


class Score(NamedTuple):
    reward: float
    extracted: str
    detail: str


def reference_answer(reference: str) -> str:
    """The answer a reference stands for; ValueError when a `####` line holds no number."""
    reference = reference.strip()
    return gsm8k_reference(reference) if "####" in reference else reference


def exact_score(reference: str, text: str) -> Score | None:
    """Rules 1-3, cheap enough to run anywhere; None when the answer needs math-verify (rule 4)."""
    if not text.strip():
        return Score(0.0, "", NO_ANSWER)
    ref = reference_answer(reference)
    if read_number(ref) is None or "\\boxed" in text:
        return None
    got = extract_final_number(text)
    if got is None:
        return Score(0.0, "", NO_ANSWER)
    if numbers_equal(got, ref):
        return Score(1.0, got, f"{got} equals the reference")
    return Score(0.0, got, f"{got} is not the reference {ref}")


def _delimited(answer: str) -> str:
    # math-verify finds LaTeX only between delimiters: a bare `\frac{\sqrt{2}}{2}` parses to nothing.
    return answer if any(d in answer for d in ("$", "\\(", "\\[", "\\boxed")) else f"${answer}$"


def math_score(reference: str, text: str, *, timeout_s: int | None) -> Score:
    """Rule 4. `timeout_s` bounds each of math-verify's parse and compare steps with signal.alarm
    (main thread only); None turns those timeouts off."""
    from math_verify import parse, verify  # late: sympy costs about a second to import

    if not text.strip():
        return Score(0.0, "", NO_ANSWER)
    ref = reference_answer(reference)
    # math-verify reads U+2212 as minus but not the other signs the exact rule reads as one (`–18`)
    pred = parse(ascii_signs(text[-MAX_MATH_CHARS:]), parsing_timeout=timeout_s)
    # parse returns [sympy object, matched text]; the text is safe to report, while str() of a
    # huge sympy object can itself take for ever.
    extracted = next((p for p in pred if isinstance(p, str)), "")
    if not pred:
        return Score(0.0, "", NO_ANSWER)
    gold = parse(_delimited(ref), parsing_timeout=timeout_s)
    if not gold:
        return Score(0.0, extracted, f"math-verify cannot parse the reference {ref!r}")
    if verify(gold, pred, timeout_seconds=timeout_s):
        return Score(1.0, extracted, "math-verify: equivalent to the reference")
    return Score(0.0, extracted, f"math-verify: not equivalent to the reference {ref}")


def score(reference: str, text: str, *, timeout_s: int | None = None) -> Score:
    """The whole rule, in process. See the module docstring for who may call it with None."""
    return exact_score(reference, text) or math_score(reference, text, timeout_s=timeout_s)
