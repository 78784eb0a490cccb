"""Step scores (which equations a completion writes, and whether each holds) and the two shapings."""

import json
import os
import re
from fractions import Fraction
from pathlib import Path

import pytest

from svc_reward.steps import clip, delta, evaluate, shape, steps

REPO = Path(__file__).resolve().parents[3]
# the sample in the repo, and a whole GSM8K file when JETRL_GSM8K_FILE names one (e.g. the test split)
GSM8K_FILES = [REPO / "tests" / "data" / "gsm8k_sample.jsonl"] + (
    [Path(os.environ["JETRL_GSM8K_FILE"])] if os.environ.get("JETRL_GSM8K_FILE") else []
)


def scored(text: str) -> list[tuple[str, float]]:
    return [(s.text, s.score) for s in steps(text)]


def test_correct_and_wrong_equations_in_text_order():
    assert scored("2 + 3 = 5, then 5 * 4 = 21.") == [("2+3=5", 1.0), ("5*4=21", 0.0)]


def test_division_is_exact_and_by_zero_is_wrong():
    assert scored("7/2 = 3.5 and 1/3 = 0.333 and 5/0 = 0") == [("7/2=3.5", 1.0), ("1/3=0.333", 0.0), ("5/0=0", 0.0)]


def test_precedence_and_unary_minus():
    assert scored("2 + 3 * 4 = 14 and 2 + 3 * 4 = 20") == [("2+3*4=14", 1.0), ("2+3*4=20", 0.0)]
    assert scored("-3 + 5 = 2, 2 * -3 = -6, 5 - -3 = 8") == [("-3+5=2", 1.0), ("2*-3=-6", 1.0), ("5--3=8", 1.0)]
    assert evaluate("-(2+3)*-2") == 10 and evaluate("10-4-3") == 3 and evaluate("12/3/2") == 2


def test_an_arithmetic_chain_worked_step_by_step():
    # the prompt `12+7-5=`, worked through its prefix: each step is checked on its own arithmetic
    assert scored("12+7=19\n19-5=14") == [("12+7=19", 1.0), ("19-5=14", 1.0)]
    assert scored("12+7=19 19-5=13") == [("12+7=19", 1.0), ("19-5=13", 0.0)]
    # `a = b = c` is two claims, as in maths: 12+7 is not 19-5
    assert scored("12+7-5 = 19-5 = 14") == [("12+7-5=19-5", 1.0), ("19-5=14", 1.0)]
    assert scored("12+7=19-5=14") == [("12+7=19-5", 0.0), ("19-5=14", 1.0)]


def test_calculator_annotations_count_once():
    assert scored("Natalia sold 48/2 = <<48/2=24>>24 clips") == [("48/2=24", 1.0)]
    assert scored("she makes 9 * 2 = $<<9*2=17>>17") == [("9*2=17", 0.0)]
    assert scored("<<(30-12)/2=9>> and <<3/4=3/4>>") == [("(30-12)/2=9", 1.0), ("3/4=3/4", 1.0)]
    # an annotation is an explicit calculator call, even a trivial one; in plain text `5 = 5` is not a step
    assert scored("<<125=125>> and 5 = 5") == [("125=125", 1.0)]
    assert scored("<<+8=8>>") == [("+8=8", 1.0)]  # a sign, as GSM8K writes it


def test_money_and_thousands_separators():
    assert scored("$5 + $3 = $8, and 1,200*2 = 2,400") == [("5+3=8", 1.0), ("1200*2=2400", 1.0)]


@pytest.mark.parametrize(
    "text",
    [
        "3+=4",
        "<<3+=4>>",
        "<<(2+1=3>>",
        "age = 5 = 5",
        "82",
        "",
        "no numbers here",
        "x * 2 + 3 = 7",  # the tail of an expression with a word in it
        "5 - 1 - 1/2 = 3 1/2",  # a mixed number
        "3 / 6 = 50%",  # a percentage
        "$400 000 x 3/100 = $12 000",
    ],
)
def test_malformed_or_partial_equations_are_not_steps(text):
    assert steps(text) == []


def test_hostile_input_is_refused_not_recursed():
    with pytest.raises(ValueError):
        evaluate("(" * 100 + "1" + ")" * 100)
    assert evaluate("-" * 10_000 + "5") == 5
    assert steps("1+" * 20_000 + "1") == []


@pytest.mark.parametrize("path", GSM8K_FILES, ids=lambda p: p.name)
def test_every_gsm8k_calculator_annotation_holds(path):
    annotations = [
        a
        for line in path.read_text().splitlines()
        if line.strip()
        for a in re.findall(r"<<[^<>]*>>", json.loads(line)["answer"])
    ]
    assert annotations
    wrong = [a for a in annotations if [s.score for s in steps(a)] != [1.0]]
    assert wrong == []


def test_evaluate_is_exact():
    assert evaluate("1/3+1/3+1/3") == 1 and evaluate("0.1+0.2") == Fraction(3, 10)


# ---- shaping ----------------------------------------------------------------------------------


def test_clip_hand_worked():
    assert clip([1.0, 0.0, 1.0], 0.5) == [0.0, -0.5, 0.0]
    assert clip([1.0, 1.0], 0.5) == [0.0, 0.0]  # all correct: nothing to add or lose
    assert clip([0.0, 0.0, 0.0], 0.5) == [-0.5] * 3  # all wrong: each costs η
    assert clip([0.0], 0.0) == [0.0]  # η = 0 turns the penalty off


def test_delta_hand_worked():
    assert delta([1.0, 0.0, 1.0]) == [1.0, -1.0, 1.0]  # sum 1 = s_1
    assert delta([0.0, 1.0]) == [-1.0, 1.0]  # sum 0 = s_1
    assert delta([1.0, 1.0, 1.0]) == [0.0, 0.0, 1.0]  # all correct
    assert delta([0.0, 0.0]) == [0.0, 0.0]  # all wrong
    assert delta([]) == [] and clip([], 0.5) == []


@pytest.mark.parametrize("n", [1, 2, 10, 100])
def test_repeating_a_correct_step_cannot_farm(n):
    scores = [s.score for s in steps("2+2=4\n" * n)]
    assert scores == [1.0] * n
    assert sum(delta(scores)) == scores[0] == 1.0  # Delta: never above s_1
    assert sum(clip(scores, 0.5)) == 0.0  # Clip: never above 0
    # after a wrong step, more correct ones still add nothing
    assert sum(delta([0.0, *scores])) == 0.0 and sum(clip([0.0, *scores], 0.5)) == -0.5


def test_shape_picks_the_named_shaping():
    assert shape([1.0, 0.0], "clip", 0.25) == [0.0, -0.25]
    assert shape([1.0, 0.0], "delta", 0.25) == [1.0, 0.0]
