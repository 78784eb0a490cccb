"""jetrl.tasks: the arithmetic and GSM8K tasks, and the answer helpers."""

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from jetrl.spec_sections import TaskSpec
from jetrl.tasks import Problem, make_task
from jetrl.tasks.answers import (
    answer_of,
    extract_final_number,
    gsm8k_reference,
    is_correct,
    majority_answer,
    numbers_equal,
)
from jetrl.tasks.arithmetic import ArithmeticTask
from jetrl.tasks.gsm8k import Gsm8kTask, format_prompt, load_gsm8k

GSM8K_SAMPLE = Path(__file__).resolve().parents[2] / "data" / "gsm8k_sample.jsonl"
EXPRESSION = re.compile(r"^\d+(?:[+-]\d+)+=$")


@pytest.fixture
def gsm8k_file(tmp_path):
    """The 5-row GSM8K sample shipped with the tests, or a small stand-in written here."""
    if GSM8K_SAMPLE.is_file():
        return GSM8K_SAMPLE
    rows = [
        {
            "question": "Janet has 16 eggs, eats 3, bakes 4 and sells the rest at $2. Dollars?",
            "answer": "16 - 3 - 4 = 9, 9 * 2 = 18\n#### 18",
        },
        {"question": "A robe takes 2 bolts and half that much. Total?", "answer": "2 + 1 = 3\n#### 3"},
        {"question": "A house costs 80,000 and earns 150%. Profit?", "answer": "...\n#### 70,000"},
        {"question": "James runs 3 sprints of 60 m 3 times. Meters?", "answer": "3*3*60\n#### 540"},
        {"question": "Wendi feeds 20 chickens. Cups?", "answer": "...\n#### 20"},
    ]
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


# ---- arithmetic ----------------------------------------------------------------------------


def test_make_task_builds_arithmetic():
    task = make_task(TaskSpec())
    assert isinstance(task, ArithmeticTask) and task.name == "arithmetic"


def test_arithmetic_is_deterministic_by_seed():
    a, b = ArithmeticTask(TaskSpec(seed=3, heldout_size=50)), ArithmeticTask(TaskSpec(seed=3, heldout_size=50))
    assert a.heldout() == b.heldout()
    assert [a.train_problem(i) for i in range(100)] == [b.train_problem(i) for i in range(100)]
    # index-addressable: problem i does not depend on which problems were asked before
    assert a.train_problem(57) == ArithmeticTask(TaskSpec(seed=3, heldout_size=50)).train_problem(57)
    c = ArithmeticTask(TaskSpec(seed=4, heldout_size=50))
    assert [p.prompt for p in c.heldout()] != [p.prompt for p in a.heldout()]
    assert [c.train_problem(i).prompt for i in range(20)] != [a.train_problem(i).prompt for i in range(20)]


def test_heldout_is_distinct_and_never_in_the_training_stream():
    task = ArithmeticTask(TaskSpec(heldout_size=200))
    heldout = task.heldout()
    assert len(heldout) == 200
    prompts = {p.prompt for p in heldout}
    assert len(prompts) == 200
    assert len({p.prompt_id for p in heldout}) == 200
    train = [task.train_problem(i) for i in range(2000)]
    assert not prompts & {p.prompt for p in train}
    assert len({p.prompt_id for p in train}) == 2000


def test_heldout_returns_a_copy():
    task = ArithmeticTask(TaskSpec(heldout_size=5))
    task.heldout().clear()
    assert len(task.heldout()) == 5


@pytest.mark.parametrize("digits, terms", [(1, 2), (2, 2), (2, 3), (3, 4)])
def test_arithmetic_answers_are_correct(digits, terms):
    task = ArithmeticTask(TaskSpec(digits=digits, terms=terms, heldout_size=20))
    for p in task.heldout() + [task.train_problem(i) for i in range(200)]:
        assert EXPRESSION.match(p.prompt), p.prompt
        operands = re.findall(r"\d+", p.prompt)
        assert len(operands) == terms
        lo = 0 if digits == 1 else 10 ** (digits - 1)
        assert all(lo <= int(x) < 10**digits for x in operands)
        assert int(p.answer) == eval(p.prompt[:-1])  # noqa: S307 - digits and +/- only (checked above)
        assert p.answer == str(int(p.answer))
        assert is_correct(p, p.answer)


def test_negative_training_index_is_an_error():
    with pytest.raises(ValueError, match=">= 0"):
        ArithmeticTask(TaskSpec(heldout_size=5)).train_problem(-1)


def test_too_large_heldout_size_is_a_clear_error():
    # 1 digit, 2 terms: 10·10 operand pairs × 2 operators = 200 distinct problems, at most 100 held out
    ArithmeticTask(TaskSpec(digits=1, terms=2, heldout_size=100))
    with pytest.raises(ValueError) as info:
        ArithmeticTask(TaskSpec(digits=1, terms=2, heldout_size=101))
    message = str(info.value)
    assert "heldout_size 101" in message and "200" in message


# ---- gsm8k ---------------------------------------------------------------------------------


def test_gsm8k_loads_a_jsonl_file_with_references(gsm8k_file):
    problems = load_gsm8k(gsm8k_file)
    assert len(problems) == 5
    assert [p.answer for p in problems] == ["18", "3", "70000", "540", "20"]
    assert [p.prompt_id for p in problems] == [f"gsm8k-{i}" for i in range(1, 6)]
    for p in problems:
        assert p.prompt.startswith("Question: ") and p.prompt.endswith("\nAnswer:")
        assert re.fullmatch(r"-?\d+(?:\.\d+)?", p.answer)


def test_gsm8k_task_splits_heldout_and_training(gsm8k_file):
    task = make_task(TaskSpec(name="gsm8k", path=str(gsm8k_file), heldout_size=2))
    assert isinstance(task, Gsm8kTask) and task.name == "gsm8k"
    heldout = task.heldout()
    assert len(heldout) == 2
    train = [task.train_problem(i) for i in range(6)]  # two epochs of the 3 training problems
    assert {p.prompt_id for p in train[:3]} == {p.prompt_id for p in train[3:]}
    assert len({p.prompt_id for p in train[:3]}) == 3
    assert not {p.prompt_id for p in heldout} & {p.prompt_id for p in train}
    all_ids = {p.prompt_id for p in load_gsm8k(gsm8k_file)}
    assert {p.prompt_id for p in heldout + train} == all_ids
    again = make_task(TaskSpec(name="gsm8k", path=str(gsm8k_file), heldout_size=2))
    assert again.heldout() == heldout and [again.train_problem(i) for i in range(6)] == train


def test_gsm8k_needs_training_problems_and_a_path(gsm8k_file):
    with pytest.raises(ValueError, match="heldout_size 5"):
        make_task(TaskSpec(name="gsm8k", path=str(gsm8k_file), heldout_size=5))
    with pytest.raises(ValidationError, match="path"):
        TaskSpec(name="gsm8k")


def test_gsm8k_bad_files_fail_loudly(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_gsm8k(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n\n" + json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:3"):
        load_gsm8k(bad)
    no_mark = tmp_path / "nomark.jsonl"
    no_mark.write_text(json.dumps({"question": "q", "answer": "it is 4"}) + "\n")
    with pytest.raises(ValueError, match=r"nomark.jsonl:1"):
        load_gsm8k(no_mark)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no problems"):
        load_gsm8k(empty)


def test_format_prompt():
    assert format_prompt("  How many?  ") == "Question: How many?\nAnswer:"


# ---- answers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("82", "82"),
        ("The answer is 1,234.", "1234"),
        ("1,000,000 dollars", "1000000"),
        ("-5", "-5"),
        ("it went from 3 to -12", "-12"),
        ("3.14 is pi", "3.14"),
        ("costs $18.50 in total", "18.50"),
        ("first 12 then 7", "7"),
        ("16 - 3 - 4 = <<16-3-4=9>>9 eggs\n#### 9", "9"),
        ("#### 1,000\n", "1000"),
        ("12 then #### 7 and 8", "8"),
        ("12 then ####", None),
        ("no number here", None),
        ("", None),
        ("12.", "12"),
    ],
)
def test_extract_final_number(text, expected):
    assert extract_final_number(text) == expected


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 18", "18"),
        ("...\n#### 70,000", "70000"),
        ("#### -3", "-3"),
        ("#### 2.5", "2.5"),
    ],
)
def test_gsm8k_reference(answer, expected):
    assert gsm8k_reference(answer) == expected


@pytest.mark.parametrize("answer", ["the answer is 5", "#### none"])
def test_gsm8k_reference_rejects_answers_without_a_number_line(answer):
    with pytest.raises(ValueError, match="####"):
        gsm8k_reference(answer)


@pytest.mark.parametrize(
    "a, b, equal",
    [
        ("1000", "1000", True),
        ("1,000", "1000", True),
        ("1000.0", "1000", True),
        ("0.5", ".5", True),
        ("-3", "-3", True),
        ("-3", "3", False),
        ("3", "3.01", False),
        ("0.1", "0.10", True),
        (None, "1", False),
        ("1", None, False),
        (None, None, False),
        ("abc", "abc", False),
        ("", "", False),
    ],
)
def test_numbers_equal(a, b, equal):
    assert numbers_equal(a, b) is equal
    assert numbers_equal(b, a) is equal


@pytest.mark.parametrize(
    "answer, completion, correct",
    [
        ("82", "82", True),
        ("82", " 82\n", True),
        ("82", "The sum is 82.", True),
        ("82", "83", False),
        ("82", "", False),
        ("82", "eighty-two", False),
        ("-14", "-14", True),
        ("-14", "14", False),
        ("70000", "$70,000", True),
        ("2.5", "2.50", True),
        ("18", "16 - 3 - 4 = 9, 9 * 2 = 18", True),
        ("18", "18 or maybe 19", False),
    ],
)
def test_is_correct(answer, completion, correct):
    assert is_correct(Problem("p", "q", answer), completion) is correct


def test_answers_are_read_and_written_canonically():
    assert [answer_of(t) for t in ["82", "1,000", "1000.0", "2.50", "x = -3", "#### 7 then 9", "none"]] == [
        "82",
        "1000",
        "1000",
        "5/2",
        "-3",
        "9",
        None,
    ]


def test_ties_go_to_the_smallest_value_whatever_the_order():
    assert majority_answer(["10", "9", "10", "9"]) == "9"
    assert majority_answer(["9", "10", "9", "10"]) == "9"
    assert majority_answer(["-1", "1"]) == "-1"
