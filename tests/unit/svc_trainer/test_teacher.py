"""svc_trainer/teacher.py: the cosine EMA rate and the teacher's update, by hand."""

import copy
import math

import pytest
import torch

from jetrl.spec_sections import TeacherSpec
from svc_trainer.teacher import EmaTeacher, ema_rate


def test_ema_rate_follows_a_cosine_from_start_to_end():
    spec = TeacherSpec(ema_start=0.9, ema_end=0.99)
    assert ema_rate(1, 11, spec) == pytest.approx(0.9)
    assert ema_rate(6, 11, spec) == pytest.approx(0.945)  # halfway: cos(pi/2) = 0
    assert ema_rate(11, 11, spec) == pytest.approx(0.99)
    # a quarter of the way: 0.99 - 0.09 * (1 + cos(pi/4)) / 2
    assert ema_rate(2, 5, spec) == pytest.approx(0.99 - 0.09 * (1 + math.cos(math.pi / 4)) / 2)
    rates = [ema_rate(v, 20, spec) for v in range(1, 21)]
    assert rates == sorted(rates)  # the teacher only ever slows down
    assert ema_rate(1, 1, spec) == pytest.approx(0.9)  # a one-step run
    with pytest.raises(ValueError, match="outside 1..5"):
        ema_rate(0, 5, spec)


def test_the_teacher_moves_only_every_update_every_versions_at_the_schedules_rate():
    every_third = TeacherSpec(ema_start=0.9, ema_end=0.99, update_every=3)
    assert [ema_rate(v, 11, every_third) for v in (1, 2, 4, 5, 7)] == [1.0] * 5  # it stays
    assert ema_rate(6, 11, every_third) == pytest.approx(0.945)  # the cosine's rate at version 6
    assert ema_rate(3, 11, every_third) == ema_rate(3, 11, TeacherSpec(ema_start=0.9, ema_end=0.99))


def test_teacher_moves_toward_the_policy_by_one_minus_m_and_is_never_trained():
    policy = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        policy.weight.copy_(torch.tensor([[1.0, 2.0]]))
    teacher = EmaTeacher(copy.deepcopy(policy))
    assert not any(p.requires_grad for p in teacher.model.parameters())
    with torch.no_grad():
        policy.weight.copy_(torch.tensor([[3.0, 0.0]]))
    teacher.update(policy.state_dict(), 0.75)  # 0.75 * [1, 2] + 0.25 * [3, 0]
    assert teacher.model.weight.tolist() == [[1.5, 1.5]]
    teacher.update(policy.state_dict(), 0.0)  # m = 0: the teacher becomes the policy
    assert teacher.model.weight.tolist() == [[3.0, 0.0]]
    assert policy.weight.tolist() == [[3.0, 0.0]]  # the policy is only read
    with pytest.raises(ValueError):
        teacher.update(policy.state_dict(), 1.5)
