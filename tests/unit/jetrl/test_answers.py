r"""The answer rule without false positives: a table of formats x right and wrong answers, and every
GSM8K gold answer accepted when written plainly, after `####` and in `\boxed{}` while its perturbed
wrong answers (gold + 1, commas out of groups of three, a minus sign, the gold as a denominator)
never are. Each is checked twice: by the exact rule (`is_correct`, held-out accuracy and the
label-free servers) and by the `verify` reward's whole rule (math-verify for `\boxed{}`)."""

import json
import re
import time
from fractions import Fraction
from pathlib import Path

import pytest

from jetrl.tasks import Problem
from jetrl.tasks.answers import answer_of, extract_final_number, gsm8k_reference, is_correct, read_number
from svc_reward.verify import score

REPO = Path(__file__).resolve().parents[3]
GSM8K_FILES = {
    "sample": REPO / "tests" / "data" / "gsm8k_sample.jsonl",
    "shared": REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl",
}
MINUS_SIGNS = {"hyphen-minus": "-", "U+2212": "\u2212", "U+2013": "\u2013", "U+FE63": "\ufe63", "U+FF0D": "\uff0d"}

# (format, reference, completion, correct)
TABLE = [
    ("plain", "18", "18", True),
    ("plain", "18", "19", False),
    ("sentence", "18", "She sells 18 eggs.", True),
    ("last number", "18", "18 or maybe 19", False),
    ("####", "18", "9 * 2 = 18\n#### 18", True),
    ("####", "18", "18 eggs\n#### 19", False),
    ("#### thousands", "1234", "#### 1,234", True),
    ("thousands", "70000", "$70,000", True),
    ("thousands", "1450000", "It costs 1,450,000.", True),
    ("thousands", "1450000", "1,450,000.5", False),
    ("bad group", "18", "1,8", False),
    ("bad group", "1", "1,8", False),
    ("bad group", "8", "1,8", False),
    ("bad group", "540", "5,4,0", False),
    ("bad group", "1234", "12,34", False),
    ("bad group", "100000", "1,00,000", False),
    ("bad group ####", "18", "#### 1,8", False),
    ("comma and space: two numbers", "8", "1, 8", True),
    ("comma and space: two numbers", "18", "1, 8", False),
    ("decimal", "2.5", "2.50", True),
    ("decimal", "3.5", "3.05", False),
    ("decimal", "0.5", "it is .5", True),
    ("decimal", "5", "it is .5", False),
    ("decimal", "18", "1.8", False),
    ("decimal", "0.3", "0.30000001", False),
    ("LaTeX fraction", "2.5", r"$\frac{5}{2}$", True),
    ("LaTeX fraction", "2", r"$\frac{5}{2}$", False),
    ("LaTeX fraction", "5", r"$\frac{5}{2}$", False),
    ("LaTeX fraction", "18", r"$\frac{36}{2}$", True),
    ("\\dfrac", "2.5", r"\dfrac{5}{2}", True),
    ("\\dfrac", "2", r"\dfrac{5}{2}", False),
    ("\\tfrac", "0.75", r"\tfrac{3}{4}", True),
    ("\\tfrac", "4", r"\tfrac{3}{4}", False),
    ("\\frac12", "0.5", r"\frac12", True),
    ("\\frac12", "2", r"\frac12", False),
    ("symbolic fraction", "2", r"$\frac{\sqrt{2}}{2}$", False),
    ("negative fraction", "-2.5", r"$-\frac{5}{2}$", True),
    ("negative fraction", "2.5", r"$-\frac{5}{2}$", False),
    ("a/b", "2.5", "5/2", True),
    ("a/b", "2", "5/2", False),
    ("a / b", "2.5", "10 / 4", True),
    ("a / b", "4", "10 / 4", False),
    ("over zero", "0", "5/0", False),
    ("minus", "-18", "-18", True),
    ("minus", "18", "-18", False),
    *[(f"minus {name}", "-18", f"x = {sign}18", True) for name, sign in MINUS_SIGNS.items()],
    *[(f"minus {name}", "18", f"x = {sign}18", False) for name, sign in MINUS_SIGNS.items()],
    ("minus dollars", "-18", "-$18", True),
    ("minus dollars", "18", "-$18", False),
    ("sign apart: a list bullet", "18", "- 18", True),
    ("plus", "18", "+18", True),
    ("plus", "-18", "+18", False),
    ("percent", "18", "18%", True),
    ("percent", "0.18", "18%", False),
    ("\\boxed", "18", r"\boxed{18}", True),
    ("\\boxed", "18", r"\boxed{19}", False),
    ("\\boxed, then a check", "18", r"So \boxed{18}. Check: 18+1=19", True),
    ("\\boxed bad group", "18", r"\boxed{1,8}", False),
    ("\\boxed bad group", "540", r"\boxed{5,4,0}", False),
    ("\\boxed thousands", "1000", r"\boxed{1{,}000}", True),
    ("\\boxed bad group", "18", r"\boxed{1{,}8}", False),
    ("\\boxed minus", "18", "\\boxed{\u221218}", False),
    ("\\boxed minus", "-18", "\\boxed{\u201318}", True),
    ("\\boxed minus", "18", "\\boxed{\uff0d18}", False),
    ("\\boxed fraction", "2.5", r"\boxed{\frac{5}{2}}", True),
    ("\\boxed fraction", "2", r"\boxed{\frac{5}{2}}", False),
    ("empty", "18", "", False),
    ("no number", "18", "eighteen", False),
]


@pytest.mark.parametrize(
    ("fmt", "reference", "completion", "correct"), TABLE, ids=[f"{f}:{c!r}->{r}" for f, r, c, _ in TABLE]
)
def test_format_table(fmt, reference, completion, correct):
    assert is_correct(Problem("p", "q", reference), completion) is correct
    assert (score(reference, completion).reward == 1.0) is correct


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("1,8", None),
        ("5,4,0", None),
        ("\u221218", "-18"),
        (r"\frac{5}{2}", "5/2"),
        ("10 / 4", "5/2"),
        (r"\frac{\sqrt{2}}{2}", None),
        ("5/0", None),
        ("+7", "7"),
        ("#### 1,234", "1234"),
        (r"\boxed{2.50} or 3", "5/2"),
    ],
)
def test_the_label_free_vote_reads_answers_alike(text, answer):
    assert answer_of(text) == answer


def test_what_equals_nothing_is_reported_as_written():
    assert [extract_final_number(t) for t in ("1,8", r"$\frac{\sqrt{2}}{2}$", "\u221218", r"\dfrac{10}{4}")] == [
        "1,8",
        r"\frac{\sqrt{2}}{2}",
        "-18",
        "5/2",
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1,000", Fraction(1000)),
        (" -3 ", Fraction(-3)),
        (r"\frac{1}{2}", Fraction(1, 2)),
        ("1/2", Fraction(1, 2)),
        ("1,8", None),
        ("1 2", None),
        (r"\frac{1}{2}x", None),
        ("abc", None),
        ("", None),
    ],
)
def test_read_number_takes_exactly_one_number(text, value):
    assert read_number(text) == value


def test_long_texts_are_read_in_one_pass():
    # every number is found, but only the last is read: a long completion costs a scan, not a parse per number
    texts = ["12 " * 200_000, r"\frac{1}{2}" * 50_000, "1/" * 200_000, r"\frac{" * 50_000, "1," * 500_000 + "8"]
    start = time.monotonic()
    assert [extract_final_number(t) for t in texts] == ["12", "1/2", "1", r"\frac{" * 50_000, "1," * 500_000 + "8"]
    assert time.monotonic() - start < 2.0


def _golds(name: str) -> list[tuple[str, str]]:
    """(the `####` line as written, the reference) of every row of a GSM8K file."""
    path = GSM8K_FILES[name]
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared GSM8K test split); tests/data/gsm8k_sample.jsonl still runs")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["answer"].rsplit("####", 1)[1].strip(), gsm8k_reference(r["answer"])) for r in rows]


def _wrong(gold: str) -> list[str]:
    """Answers that must never be accepted for `gold`: gold + 1, its digits with commas that are
    not thousands groups (`1,8` for 18), the gold under each minus sign, the gold as a denominator."""
    value = Fraction(gold)
    digits = gold.lstrip("-")
    commas = [digits[:i] + "," + digits[i:] for i in range(1, len(digits))] + [",".join(digits)] * (len(digits) > 1)
    wrong = [str(value + 1), rf"$\frac{{{value + 1}}}{{{gold}}}$"]
    wrong += [c for c in dict.fromkeys(commas) if not re.fullmatch(r"\d{1,3}(,\d{3})+", c)]
    if value > 0:
        wrong += [sign + gold for sign in MINUS_SIGNS.values()]
    if value < 0:
        wrong += [digits, "+" + digits]
    return wrong


def _written(answer: str) -> list[str]:
    return [
        answer,
        f"The answer is {answer}.",
        f"So it is 3 + 4.\n#### {answer}",
        rf"The answer is \boxed{{{answer}}}.",
    ]


@pytest.mark.parametrize("name", GSM8K_FILES)
def test_every_gsm8k_gold_is_accepted_and_no_perturbation_of_it_is(name):
    golds = _golds(name)
    assert golds
    for written, gold in golds:
        problem = Problem("p", "q", gold)
        for text in _written(written) + _written(gold):
            assert is_correct(problem, text), (gold, text)
            assert score(gold, text).reward == 1.0, (gold, text)
        for wrong in _wrong(gold):
            for text in _written(wrong):
                assert not is_correct(problem, text), (gold, text)
                assert score(gold, text).reward == 0.0, (gold, text)
