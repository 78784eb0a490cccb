"""jetrl/views.py: the views of a group, and the tasks' analogous rephrasings."""

import json
from fractions import Fraction

import pytest

from jetrl.config import RunSpec, SpecError, parse_spec
from jetrl.spec_sections import ModelSpec, RolloutSpec, TaskSpec, TeacherSpec
from jetrl.tasks import make_task
from jetrl.tasks.arithmetic import _reorder, _write
from jetrl.v1 import events_pb2 as ev
from jetrl.views import View, group_size, layout, split


def spec(**fields) -> RunSpec:
    return RunSpec(model=ModelSpec(path="/m"), **fields)


def test_layout_puts_views_one_after_another():
    assert layout(spec()) == [View("main", 0, 8, True)]
    both = spec(rollout=RolloutSpec(group_size=4, analogous_view=True), teacher=TeacherSpec(samples=3))
    assert layout(both) == [View("main", 0, 4, True), View("analogous", 4, 4, True), View("teacher", 8, 3, False)]
    assert group_size(both) == 11
    assert layout(spec(rollout=RolloutSpec(group_size=2), teacher=TeacherSpec(samples=5)))[1] == View(
        "teacher", 2, 5, False
    )


def test_split_finds_each_views_samples_and_a_plain_group_is_all_main():
    samples = [ev.Sample(sample_id=f"g.{i}", index=i) for i in range(5)]
    plain = ev.PromptGroup(prompt="1+1=", samples=samples)
    assert [(v.view, v.trained, idx) for v, idx in split(plain)] == [("main", True, [0, 1, 2, 3, 4])]
    viewed = ev.PromptGroup(
        prompt="1+1=",
        samples=samples,
        views=[
            ev.ViewPrompt(view="main", first_index=0, size=2, trained=True),
            ev.ViewPrompt(view="teacher", first_index=2, size=3, trained=False),
        ],
    )
    assert [(v.view, idx) for v, idx in split(viewed)] == [("main", [0, 1]), ("teacher", [2, 3, 4])]


def _value(expr: str) -> Fraction:
    words = expr.replace(" plus ", "+").replace(" minus ", "-").replace(" ", "").rstrip("=")
    total, sign, num = Fraction(0), 1, ""
    for c in words + "+":
        if c in "+-" and num:
            total, num = total + sign * int(num), ""
            sign = 1 if c == "+" else -1
        elif c in "+-":
            sign = 1 if c == "+" else -1
        else:
            num += c
    return total


@pytest.mark.parametrize("rephrase", ["order", "words"])
def test_arithmetic_rephrasings_keep_the_answer_and_change_the_surface(rephrase):
    task = make_task(TaskSpec(terms=3, rephrase=rephrase))
    for i in range(50):
        p = task.train_problem(i)
        assert p.analogous != p.prompt and _value(p.analogous) == _value(p.prompt) == int(p.answer)
    assert task.has_analogous


def test_arithmetic_rephrasing_by_order_rotates_the_terms_keeping_their_signs():
    task = make_task(TaskSpec(terms=3))
    p = task.train_problem(1)  # 27+29-91=
    assert (p.prompt, p.analogous) == ("27+29-91=", "29-91+27=")


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        ([("+", 12), ("-", 7), ("+", 5), ("+", 3)], "5+3+12-7="),  # rotated to the next added term
        ([("+", 12), ("-", 7), ("-", 5), ("-", 3)], "12-3-5-7="),  # none: the subtracted terms reversed
        ([("+", 9), ("-", 4), ("-", 4)], "-4-4+9="),  # reversing changes nothing: rotated by one
        ([("+", 37), ("-", 45)], "-45+37="),
    ],
)
def test_arithmetic_rephrasing_by_order_starts_with_an_added_term_where_it_can(terms, expected):
    assert _write(_reorder(terms)) == expected


def test_arithmetic_rephrasings_rarely_start_with_a_sign():
    """The view must be as readable as the prompt: before, half of 4-term rephrasings began with "-"."""
    task = make_task(TaskSpec(terms=4, digits=1))
    signed = sum(task.train_problem(i).analogous.startswith("-") for i in range(1000))
    assert signed < 30  # only all-subtracted chains whose reversal is the same (1/8 x 1/10)


def _gsm8k(path, n, **extra):
    rows = [
        {"question": f"What is {i} + {i}?", "answer": f"{i}+{i}=<<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}", **extra}
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_gsm8k_rephrasing_from_a_column_or_a_parallel_file(tmp_path):
    with_column = _gsm8k(tmp_path / "a.jsonl", 4, rephrased_question="Add the number to itself.")
    task = make_task(TaskSpec(name="gsm8k", path=str(with_column), heldout_size=1))
    assert task.has_analogous and task.train_problem(0).analogous == "Question: Add the number to itself.\nAnswer:"
    plain = _gsm8k(tmp_path / "b.jsonl", 4)
    assert not make_task(TaskSpec(name="gsm8k", path=str(plain), heldout_size=1)).has_analogous
    views = tmp_path / "views.jsonl"
    views.write_text("\n".join(json.dumps({"question": f"Double {i}."}) for i in range(4)))
    task = make_task(TaskSpec(name="gsm8k", path=str(plain), heldout_size=1, rephrase_path=str(views)))
    assert all(task.train_problem(i).analogous.startswith("Question: Double ") for i in range(3))
    views.write_text(json.dumps({"question": "only one"}))
    with pytest.raises(ValueError, match="pair line by line"):
        make_task(TaskSpec(name="gsm8k", path=str(plain), heldout_size=1, rephrase_path=str(views)))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("rollout: {analogous_view: true}\nschedule: {over_provision: 2}", "APRIL"),
        ("teacher: {samples: 2}\nschedule: {over_provision: 2}", "APRIL"),
        ("teacher: {ema_start: 0.9, ema_end: 0.5}", "ema_end"),
        ("reward: {endpoint: 'a:1', endpoints: [{address: 'b:2'}]}", "not both"),
        ("reward: {endpoints: [{address: 'a:1'}, {address: 'a:1', weight: 2}]}", "twice"),
        ("reward: {endpoints: [{address: 'nohost'}]}", "address"),
        ("reward: {max_dropped: 3}", "needs on_failure: drop"),
        ("reward: {on_failure: drop, max_dropped: 0}", "max_dropped"),
    ],
)
def test_specs_that_cannot_run_their_views_or_rewards_are_refused(text, needle):
    with pytest.raises(SpecError, match=needle):
        parse_spec("model: {path: /m}\n" + text)


def test_one_endpoint_is_short_for_a_list_of_one():
    s = parse_spec("model: {path: /m}\nreward: {endpoint: 'host:50055'}")
    assert [(e.address, e.weight) for e in s.reward.endpoints] == [("host:50055", 1.0)]
    assert parse_spec("model: {path: /m}\nreward: {endpoint: }").reward.endpoints == ()
