"""Label-free agreement rewards (svc_reward/consensus.py) against hand-worked cases."""

from svc_reward.consensus import co_rewards, majority_rewards


def test_majority_hand_worked():
    # answers 82, 82, 81, none, 82.0 -> 82 three times: label 82
    vote = majority_rewards(["82", "82", "81", "", "82.0"])
    assert vote.label == "82"
    assert vote.rewards == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert vote.answers == ["82", "82", "81", None, "82"]


def test_empty_answers_never_win():
    # three completions without a number outvote nothing: the one number is the label
    vote = majority_rewards(["", "no idea", "??", "5"])
    assert vote.label == "5" and vote.rewards == [0.0, 0.0, 0.0, 1.0]
    nobody = majority_rewards(["", "x"])
    assert nobody.label is None and nobody.rewards == [0.0, 0.0]


def test_all_equal_and_a_group_of_one():
    assert majority_rewards(["4", "4.0", "4"]).rewards == [1.0, 1.0, 1.0]
    assert majority_rewards(["7"]).rewards == [1.0]


def test_co_reward_scores_each_view_against_the_other_views_majority():
    # view q: 12, 12, 13 (majority 12); view q': 13, 13, 12 (majority 13)
    mine, theirs = co_rewards(["12", "12", "13"], ["13", "13", "12"])
    assert (mine.label, mine.rewards) == ("13", [0.0, 0.0, 1.0])
    assert (theirs.label, theirs.rewards) == ("12", [0.0, 0.0, 1.0])
    # the other view has no answer at all: nothing to agree with
    mine, theirs = co_rewards(["3", "3"], ["", "-"])
    assert mine.rewards == [0.0, 0.0] and theirs.label == "3" and theirs.rewards == [0.0, 0.0]
