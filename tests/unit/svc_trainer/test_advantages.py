"""Group-relative advantage estimators (svc_trainer/advantages.py, docs/design.md §5) against hand-worked values.

grpo uses the UNBIASED (sample, divide by G-1) std plus 1e-6 in the denominator.
"""

import math
import typing

import pytest

from jetrl.spec_sections import TrainSpec
from svc_trainer.advantages import ESTIMATORS, compute, dr_grpo, grpo, mc_grpo, rloo


def test_grpo_binary_rewards_hand_worked():
    # r = [1, 0, 0, 1]: mean 0.5, deviations ±0.5,
    # unbiased var = 4·0.25 / (4-1) = 1/3, std = 0.5773502691896257,
    # adv = ±0.5 / (0.5773502691896257 + 1e-6) = ±0.8660239037870368
    assert grpo([1, 0, 0, 1]) == pytest.approx(
        [0.8660239037870368, -0.8660239037870368, -0.8660239037870368, 0.8660239037870368], rel=1e-12
    )


def test_grpo_uses_sample_std_not_population_std():
    # r = [3, 1, 2]: mean 2, deviations [1, -1, 0], unbiased var = 2/2 = 1 -> std 1
    # adv = [1, -1, 0] / (1 + 1e-6) = [0.9999990000010001, -0.9999990000010001, 0]
    # (the population std would be sqrt(2/3) and give ±1.2247...)
    assert grpo([3, 1, 2]) == pytest.approx([0.9999990000010001, -0.9999990000010001, 0.0], rel=1e-12, abs=1e-15)


def test_grpo_one_correct_out_of_four():
    # r = [1, 0, 0, 0]: mean 0.25, deviations [0.75, -0.25, -0.25, -0.25],
    # unbiased var = (0.5625 + 3·0.0625) / 3 = 0.25 -> std 0.5
    # adv = 0.75/0.500001 = 1.499997000006, -0.25/0.500001 = -0.499999000002
    assert grpo([1, 0, 0, 0]) == pytest.approx(
        [1.499997000006, -0.499999000002, -0.499999000002, -0.499999000002], rel=1e-12
    )


def test_grpo_is_invariant_to_reward_shift_and_scale_up_to_epsilon():
    base = grpo([1, 0, 0, 1])
    assert grpo([11, 10, 10, 11]) == pytest.approx(base, rel=1e-9)
    # scaling by 100 makes the 1e-6 epsilon relatively smaller: ±50/(57.735...+1e-6) ≈ ±0.8660254
    assert grpo([100, 0, 0, 100]) == pytest.approx([0.8660254] + [-0.8660254] * 2 + [0.8660254], rel=1e-6)


def test_dr_grpo_hand_worked():
    # r - mean, no std: [1,0,0,1] -> mean 0.5 -> [0.5, -0.5, -0.5, 0.5]
    assert dr_grpo([1, 0, 0, 1]) == pytest.approx([0.5, -0.5, -0.5, 0.5])
    # [2, 4, 9]: mean 5 -> [-3, -1, 4]
    assert dr_grpo([2, 4, 9]) == pytest.approx([-3.0, -1.0, 4.0])


def test_rloo_hand_worked():
    # r_i - mean of the other G-1: [1,0,0,1]:
    #   i=0: 1 - (0+0+1)/3 = 2/3 ; i=1: 0 - (1+0+1)/3 = -2/3
    assert rloo([1, 0, 0, 1]) == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    # [2, 4, 9]: 2 - 13/2 = -4.5 ; 4 - 11/2 = -1.5 ; 9 - 6/2 = 6
    assert rloo([2, 4, 9]) == pytest.approx([-4.5, -1.5, 6.0])


def test_rloo_is_dr_grpo_scaled_by_g_over_g_minus_1():
    # r_i - (S - r_i)/(G-1) = G/(G-1) · (r_i - mean)
    r = [0.3, 1.0, 0.0, 0.7, 0.2]
    assert rloo(r) == pytest.approx([5 / 4 * a for a in dr_grpo(r)])


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
@pytest.mark.parametrize("rewards", [[0, 0, 0, 0], [1, 1, 1, 1], [0.1, 0.1, 0.1], [-2.5] * 8])
def test_all_equal_rewards_give_zero_advantages(name, rewards):
    adv = compute(name, rewards)
    assert len(adv) == len(rewards)
    assert adv == pytest.approx([0.0] * len(rewards), abs=1e-9)
    assert all(math.isfinite(a) for a in adv)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_group_of_one_and_empty_group(name):
    assert compute(name, [0.7]) == [0.0]
    assert compute(name, []) == []


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_advantages_sum_to_zero_and_keep_the_order_of_rewards(name):
    r = [0.0, 1.0, 0.5, 1.0, 0.25]
    adv = compute(name, r)
    assert sum(adv) == pytest.approx(0.0, abs=1e-12)
    order = sorted(range(len(r)), key=lambda i: r[i])
    assert [adv[i] for i in order] == sorted(adv)


def test_compute_dispatches_to_each_estimator():
    r = [1, 0, 0, 1]
    assert compute("grpo", r) == grpo(r)
    assert compute("dr_grpo", r) == dr_grpo(r)
    assert compute("rloo", r) == rloo(r)


def test_unknown_estimator_is_a_clear_error():
    with pytest.raises(ValueError) as info:
        compute("ppo_gae", [1, 0])
    message = str(info.value)
    assert "ppo_gae" in message
    for name in ("grpo", "dr_grpo", "rloo"):
        assert name in message


def test_every_estimator_a_run_spec_may_name_exists():
    allowed = set(typing.get_args(TrainSpec.model_fields["advantage"].annotation))
    assert allowed <= set(ESTIMATORS)


# ---- mc_grpo: G+1 samples, median baseline, pivot excluded ------------------------------------


def test_mc_grpo_std_hand_worked():
    # r = [1, 0, 1, 0, 1] (G+1 = 5): sorted by (reward, index) -> indices [1, 3, 0, 2, 4], the
    # middle one (position 2) is index 0: the pivot, baseline 1.
    # mean 0.6, unbiased var = (3·0.16 + 2·0.36) / 4 = 0.3, std = 0.5477225575051661
    # adv = (r - 1) / (std + 1e-6): 0 for the other 1s, -1 / 0.5477235575051661 = -1.8257385250
    adv = mc_grpo([1, 0, 1, 0, 1])
    assert adv[0] is None
    assert adv[1:] == pytest.approx([-1.8257385250, 0.0, -1.8257385250, 0.0], rel=1e-9)


def test_mc_grpo_mad_and_its_zero_for_binary_majorities():
    # r = [0.2, 0.9, 0.5]: median 0.5 at index 2 (pivot); |r - 0.5| = [0.3, 0.4, 0] -> MAD 0.3
    # adv = [-0.3, 0.4] / 0.301 = [-0.99667774..., 1.32890365...]
    adv = mc_grpo([0.2, 0.9, 0.5], scale="mad")
    assert adv[2] is None and adv[:2] == pytest.approx([-0.3 / 0.301, 0.4 / 0.301], rel=1e-12)
    # binary with a majority: MAD = median(|r - 1|) = median([0, 1, 0]) = 0 -> denominator 1e-3
    assert mc_grpo([1, 0, 1], scale="mad") == [None, pytest.approx(-1000.0), pytest.approx(0.0)]


def test_mc_grpo_ties_all_equal_and_a_group_of_one():
    assert mc_grpo([0.5, 0.5, 0.5]) == [0.0, None, 0.0]  # ties: the pivot is the middle index
    assert mc_grpo([0, 0, 0], scale="mad") == [0.0, None, 0.0]
    assert mc_grpo([1.0]) == [None]  # G = 0: only the pivot, nothing to train
    with pytest.raises(ValueError, match="odd"):
        mc_grpo([1, 0])
    with pytest.raises(ValueError, match="scale"):
        mc_grpo([1, 0, 1], scale="iqr")


def test_compute_passes_the_mc_scale_and_the_spec_needs_an_odd_group():
    assert compute("mc_grpo", [0.2, 0.9, 0.5], mc_scale="mad")[0] == pytest.approx(-0.3 / 0.301)
    from jetrl.config import RunSpec

    with pytest.raises(ValueError, match="odd"):
        RunSpec.model_validate(
            {"model": {"path": "/m"}, "rollout": {"group_size": 8}, "train": {"advantage": "mc_grpo"}}
        )
    assert (
        RunSpec.model_validate(
            {
                "model": {"path": "/m"},
                "rollout": {"group_size": 9},
                "train": {"advantage": "mc_grpo", "mc_scale": "mad"},
            }
        ).train.mc_scale
        == "mad"
    )
