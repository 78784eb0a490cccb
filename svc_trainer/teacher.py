"""Co-rewarding-II's teacher: an exponential moving average of the policy, kept by the trainer.

After the optimizer step that makes version v, every teacher weight moves toward the policy's:
    teacher <- m_v * teacher + (1 - m_v) * policy,
    m_v = end - (end - start) * (1 + cos(pi * (v - 1) / max(T - 1, 1))) / 2,
a cosine from `teacher.ema_start` at the first step to `teacher.ema_end` at the last (T =
train.steps), at every `teacher.update_every`-th version only (m = 1 in between). Defaults
0.9 -> 0.99, every version: early on the teacher follows the policy within ~10 versions, so its
pseudo-labels improve with it; late it barely moves, so the policy cannot drag the labels it is
rewarded by along with its own drift (the collapse the teacher exists to prevent). The authors'
script keeps a much slower teacher (0.99 -> 0.99999): spec_sections.TeacherSpec.update_every.

The teacher starts as version 0 (the run's model directory), is checkpointed next to the policy
(`runs/<run>/teacher/v000007.safetensors`), and is announced on the run's teacher subject with the
policy version it has absorbed, so rollout workers load it exactly as they load the policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch

from jetrl.spec_sections import TeacherSpec
from svc_trainer.checkpoint import run_dir

__all__ = ["ema_rate", "EmaTeacher", "teacher_path"]


def ema_rate(version: int, total_steps: int, spec: TeacherSpec) -> float:
    """m for the update that makes `version` (1-based): ema_start at version 1, ema_end at the last;
    1 (the teacher stays) at a version that is not a multiple of `teacher.update_every`."""
    if not 1 <= version <= total_steps:
        raise ValueError(f"version {version} is outside 1..{total_steps}")
    if version % spec.update_every:
        return 1.0
    progress = (version - 1) / max(total_steps - 1, 1)
    return spec.ema_end - (spec.ema_end - spec.ema_start) * (1 + math.cos(math.pi * progress)) / 2


def teacher_path(data_dir: Path, run_id: str, version: int) -> Path:
    return run_dir(data_dir, run_id) / "teacher" / f"v{version:06d}.safetensors"


class EmaTeacher:
    """A frozen model, a copy of the policy's, that only ever moves by EMA toward it."""

    def __init__(self, model: torch.nn.Module):
        """`model` becomes the teacher's own (the trainer loads one for it: version 0's weights)."""
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, policy: Mapping[str, torch.Tensor], m: float) -> None:
        """Move toward `policy`'s weights by name (a version's tensors: tied ones once)."""
        if not 0.0 <= m <= 1.0:
            raise ValueError(f"EMA rate {m} is outside [0, 1]")
        state = self.model.state_dict()  # views of the parameters: a tied pair shares one storage
        for name, p in policy.items():
            if state[name].is_floating_point():  # an integer buffer (positions, counts) is not averaged
                state[name].mul_(m).add_(p.to(state[name].dtype), alpha=1.0 - m)

    def update_from(self, version: Path, m: float) -> None:
        """`update` toward the policy version saved at `version` (its file, or shards' index)."""
        from jetrl.policy.load import read_state_file

        self.update(read_state_file(self.model, version), m)
