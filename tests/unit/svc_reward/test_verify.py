import json
import time
from pathlib import Path

import pytest

from jetrl.tasks.answers import gsm8k_reference
from svc_reward.verify import Score, reference_answer, score

GSM8K_SAMPLE = Path(__file__).resolve().parents[2] / "data" / "gsm8k_sample.jsonl"


def test_arithmetic_exact():
    assert score("82", "82") == Score(1.0, "82", "82 equals the reference")
    wrong = score("82", "83")
    assert (wrong.reward, wrong.extracted) == (0.0, "83")
    assert "82" in wrong.detail


def test_negative_numbers():
    assert score("-5", "-5").reward == 1.0
    assert score("-5", "5").reward == 0.0
    assert score("5", "-5").reward == 0.0


def test_trailing_text_without_numbers_is_ignored():
    for text in ("82 ", "82\n\n", " 82 is the answer.", "82<pad>"):
        assert score("82", text).reward == 1.0, text


def test_the_answer_is_the_last_number():
    # the same rule as held-out accuracy (extract_final_number): ending on another number is wrong
    assert score("82", "82\n12+7=19").reward == 0.0
    assert score("82", "37+45 is 82").reward == 1.0


def test_gsm8k_answers_with_thousands_commas():
    completion = "She sells 1,000 + 234 = 1,234 cups.\n#### 1,234"
    assert score("1234", completion) == Score(1.0, "1234", "1234 equals the reference")
    # after a `####` line, numbers before it no longer count
    assert score("1234", "Half of 99 is 49.5, so\n#### 1,234").reward == 1.0
    assert score("1234", "1234 is wrong\n#### 1,235").reward == 0.0
    # the reference may be a whole GSM8K answer field
    assert score("It is 1000+234.\n#### 1,234", "1234").reward == 1.0


def test_decimals_compare_exactly():
    assert score("3.5", "3.50").reward == 1.0
    assert score("1,000", "1000.0").reward == 1.0
    assert score("3.5", "3.05").reward == 0.0
    assert score("0.3", "0.30000001").reward == 0.0


def test_boxed_latex_goes_through_math_verify():
    assert score("0.5", r"So the probability is \boxed{\frac{1}{2}}.").reward == 1.0
    assert score("0.6", r"\boxed{\frac{1}{2}}").reward == 0.0
    assert score(r"\frac{\sqrt{2}}{2}", r"Hence \boxed{\frac{1}{\sqrt 2}}").reward == 1.0
    assert score("$x^2+1$", r"\boxed{1+x^2}").reward == 1.0
    s = score("1234", r"\boxed{1,234}")
    assert (s.reward, s.extracted) == (1.0, "1,234")


def test_empty_completion_has_no_answer():
    assert score("82", "") == Score(0.0, "", "no answer")
    assert score(r"\frac{1}{2}", "  \n") == Score(0.0, "", "no answer")
    assert score("82", "I do not know").detail == "no answer"


def test_pathological_long_input_returns_quickly():
    start = time.monotonic()
    assert score("0.5", "\\boxed{" + "1+" * 50_000 + "1}").reward == 0.0
    assert score("0.5", "{" * 100_000).reward == 0.0
    assert score("7", "1," * 500_000 + "8").reward == 0.0
    assert time.monotonic() - start < 3.0


def test_reference_with_an_empty_gsm8k_line_is_refused():
    with pytest.raises(ValueError, match="####"):
        reference_answer("so it is\n#### none")


def test_real_gsm8k_answers_score_against_themselves():
    rows = [json.loads(line) for line in GSM8K_SAMPLE.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 5
    for row in rows:
        answer, number = row["answer"], gsm8k_reference(row["answer"])
        assert score(answer, answer).reward == 1.0
        assert score(number, answer) == Score(1.0, number, f"{number} equals the reference")
        wrong = str(int(number) + 1)
        assert score(answer, answer.rsplit("####", 1)[0] + f"#### {wrong}").reward == 0.0
