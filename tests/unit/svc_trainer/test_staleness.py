"""The trainer's staleness bound (svc_trainer/staleness.py) on hand-worked token versions.

A token of version v trained at version S has lag S - v; it is trainable when lag <= η.
"""

import pytest

from svc_trainer.staleness import TokenStaleness, batch_metrics, token_staleness


def test_synchronous_on_policy_sample_is_all_trainable():
    # η = 0, S = 3, every token from v3: lags [0, 0, 0]
    assert token_staleness([3, 3, 3], version=3, max_staleness=0) == TokenStaleness(
        trainable=(True, True, True), staleness=0, trained_tokens=3, stale_masked_tokens=0, offpolicy_tokens=0
    )


def test_synchronous_masks_any_older_token():
    # η = 0, S = 3, versions [2, 3]: lags [1, 0] -> the v2 token is masked; staleness is over
    # trained tokens only, so 0
    assert token_staleness([2, 3], version=3, max_staleness=0) == TokenStaleness(
        trainable=(False, True), staleness=0, trained_tokens=1, stale_masked_tokens=1, offpolicy_tokens=0
    )


def test_bound_of_two_keeps_lags_up_to_two():
    # η = 2, S = 5, versions [3, 4, 5, 5]: lags [2, 1, 0, 0] -> all trainable, two off-policy
    assert token_staleness([3, 4, 5, 5], version=5, max_staleness=2) == TokenStaleness(
        trainable=(True, True, True, True), staleness=2, trained_tokens=4, stale_masked_tokens=0, offpolicy_tokens=2
    )


def test_resumed_sample_has_its_stale_prefix_masked():
    # a sample generated over three attempts, trained at S = 7 with η = 2:
    # versions [3, 3, 4, 5, 6, 7, 7] -> lags [4, 4, 3, 2, 1, 0, 0]
    # trainable: lag <= 2 -> the last four; staleness max(2, 1, 0, 0) = 2; off-policy: lags 2 and 1
    assert token_staleness([3, 3, 4, 5, 6, 7, 7], version=7, max_staleness=2) == TokenStaleness(
        trainable=(False, False, False, True, True, True, True),
        staleness=2,
        trained_tokens=4,
        stale_masked_tokens=3,
        offpolicy_tokens=2,
    )


def test_all_stale_sample_trains_nothing():
    # η = 1, S = 10, versions [5, 6, 8]: lags [5, 4, 2], all > 1
    assert token_staleness([5, 6, 8], version=10, max_staleness=1) == TokenStaleness(
        trainable=(False, False, False), staleness=0, trained_tokens=0, stale_masked_tokens=3, offpolicy_tokens=0
    )


def test_empty_completion_counts_nothing():
    assert token_staleness([], version=4, max_staleness=1) == TokenStaleness((), 0, 0, 0, 0)


def test_token_from_a_version_not_yet_trained_is_an_error():
    with pytest.raises(ValueError, match="newer than the trained version 3"):
        token_staleness([3, 4], version=3, max_staleness=2)


def test_negative_bound_is_an_error():
    with pytest.raises(ValueError, match="must be >= 0"):
        token_staleness([0], version=0, max_staleness=-1)


def test_a_recycled_prefix_may_lag_its_own_bound_and_the_rest_only_eta():
    # APRIL over a synchronous loop: η = 0, recycled_staleness 1, S = 5; the first 2 tokens were
    # recycled from the attempt at v4, the rest generated at v5; a v4 token after the prefix is not
    # recycled (say a weight switch mid-generation) and keeps η's mask
    assert token_staleness([4, 4, 5, 4], version=5, max_staleness=0, recycled=2, recycled_staleness=1) == (
        TokenStaleness(
            trainable=(True, True, True, False),
            staleness=1,
            trained_tokens=3,
            stale_masked_tokens=1,
            offpolicy_tokens=2,
        )
    )
    # two versions old is beyond that bound too
    assert token_staleness([3, 5], version=5, max_staleness=0, recycled=1, recycled_staleness=1).trainable == (
        False,
        True,
    )
    # without a recycled bound the prefix is held to η like every token
    assert token_staleness([4, 5], version=5, max_staleness=0, recycled=1).trainable == (False, True)


def test_a_recycled_bound_below_eta_is_an_error():
    with pytest.raises(ValueError, match="the recycled one >= η"):
        token_staleness([0], version=0, max_staleness=2, recycled=1, recycled_staleness=1)


def test_batch_metrics_sum_the_samples():
    resumed = token_staleness([3, 3, 4, 5, 6, 7, 7], version=7, max_staleness=2)  # 4 trained, 2 off-policy, 3 masked
    fresh = token_staleness([5, 6, 6, 7], version=7, max_staleness=2)  # lags [2, 1, 1, 0]: 4 trained, 3 off-policy
    # off-policy share (2 + 3) / (4 + 4) = 0.625; stale-masked 3 + 0
    assert batch_metrics([resumed, fresh]) == {"offpolicy_token_share": 0.625, "stale_masked_tokens": 3.0}


def test_batch_metrics_with_nothing_trainable():
    stale = token_staleness([0, 0], version=5, max_staleness=1)
    assert batch_metrics([stale]) == {"offpolicy_token_share": 0.0, "stale_masked_tokens": 2.0}
