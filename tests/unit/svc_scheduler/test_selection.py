import random
from collections import Counter

import pytest

from svc_scheduler.selection import Evidence, ThompsonSelector, posteriors


def test_posterior_decays_old_evidence():
    # λ = 0.5 at v = 4: the group of v = 2 weighs 0.25, the one of v = 4 weighs 1
    ev = [Evidence(0, 2, 3, 1), Evidence(0, 4, 1, 3), Evidence(7, 3, 2, 0)]
    post = posteriors(ev, version=4, decay=0.5)
    assert post[0] == pytest.approx((1 + 0.25 * 3 + 1, 1 + 0.25 * 1 + 3))  # (2.75, 4.25)
    assert post[7] == pytest.approx((1 + 0.5 * 2, 1.0))
    assert set(post) == {0, 7}  # prompts without evidence are left at the prior


def test_decay_one_is_plain_counting_and_future_evidence_counts_fully():
    ev = [Evidence(1, 0, 3, 5), Evidence(1, 9, 2, 2)]
    assert posteriors(ev, version=9, decay=1.0) == {1: (6.0, 8.0)}
    # evidence newer than the version asked about counts as current
    assert posteriors([Evidence(2, 6, 4, 1)], version=3, decay=0.5) == {2: (5.0, 2.0)}


def test_posterior_drifts_back_to_the_prior():
    a, b = posteriors([Evidence(0, 0, 8, 0)], version=60, decay=0.5)[0]
    assert a == pytest.approx(1.0) and b == 1.0


def test_no_evidence_is_the_prior():
    assert posteriors([], version=3, decay=0.9) == {}


def test_evidence_from_rewards_counts_rewards_above_one_half():
    assert Evidence.from_rewards(3, 2, [1.0, 0.0, 0.6, 0.5]) == Evidence(3, 2, 2, 2)


@pytest.mark.parametrize(
    "bad", [dict(prompt_index=-1), dict(version=-1), dict(successes=-1.0), dict(failures=float("nan"))]
)
def test_evidence_is_validated(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Evidence(**{**dict(prompt_index=0, version=0, successes=1.0, failures=1.0), **bad})


def test_arguments_are_validated():
    with pytest.raises(ValueError, match="decay"):
        ThompsonSelector(10, 0.0)
    with pytest.raises(ValueError, match="decay"):
        posteriors([], version=0, decay=1.5)
    with pytest.raises(ValueError, match="pool_size"):
        ThompsonSelector(0, 0.9)
    with pytest.raises(ValueError, match="version"):
        posteriors([], version=-1, decay=0.9)
    sel = ThompsonSelector(3, 0.9)
    for k in (0, 4):
        with pytest.raises(ValueError, match="k must be"):
            sel.choose([], 0, (), random.Random(0), k=k)


def test_excluded_prompts_are_passed_over_unless_all_are():
    sel = ThompsonSelector(4, 0.9)
    rng = random.Random(1)
    for _ in range(50):
        assert sel.choose([], 0, {0, 1, 3}, rng) == [2]
    # everything in flight: the exclusion is ignored rather than choosing nothing
    assert sel.choose([], 0, {0, 1, 2, 3}, rng)[0] in range(4)
    # fewer than k left: the others come first, then excluded ones fill in, all distinct
    chosen = sel.choose([], 0, {0, 1, 3}, rng, k=3)
    assert chosen[0] == 2 and len(set(chosen)) == 3 and set(chosen) <= {0, 1, 2, 3}


def test_same_seed_same_choices():
    ev = [Evidence(i, i % 3, i % 5, 4 - i % 5) for i in range(20)]
    sel = ThompsonSelector(32, 0.8)
    first, second = random.Random(7), random.Random(7)
    assert [sel.choose(ev, 3, {5}, first, k=4) for _ in range(10)] == [
        sel.choose(ev, 3, {5}, second, k=4) for _ in range(10)
    ]


def test_choose_many_is_without_replacement():
    sel = ThompsonSelector(10, 0.9)
    chosen = sel.choose([Evidence(3, 0, 4, 4)], 0, {1}, random.Random(2), k=10)
    assert sorted(chosen) == list(range(10))
    assert chosen[-1] == 1  # the excluded prompt only fills in last


def test_prefers_prompts_solved_half_the_time_and_still_explores():
    # 0-9 always solved, 10-19 never, 20-29 half the time (two groups of 8 each); 30-39 unseen
    ev = []
    for i in range(30):
        s = {0: 8, 1: 0, 2: 4}[i // 10]
        ev += [Evidence(i, 4, s, 8 - s), Evidence(i, 5, s, 8 - s)]
    sel = ThompsonSelector(40, 0.9)
    rng = random.Random(0)
    counts = Counter(sel.choose(ev, 5, (), rng)[0] // 10 for _ in range(300))
    assert counts[2] / 300 > 0.6  # uniform choice would give 25%
    assert counts[0] + counts[1] < 15  # the settled prompts are almost never chosen
    assert counts[3] >= 15  # the unseen (prior) prompts are still explored


def test_evidence_outside_the_pool_is_ignored():
    sel = ThompsonSelector(2, 1.0)
    assert sorted(sel.choose([Evidence(5, 0, 4, 4)], 0, (), random.Random(3), k=2)) == [0, 1]
