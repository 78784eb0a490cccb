"""The built-in `process` reward server: the outcome plus shaped step scores (docs/design.md §6).

Per sample: outcome = exact-number match of the final answer against the reference
(svc_reward.verify.exact_score, the rule held-out accuracy uses); s_k = 1/0 for each step the
completion writes, an equation whose arithmetic holds or not (svc_reward.steps); r_k = those
scores shaped by Clip or Delta; reward = outcome + step_weight * sum_k r_k. Neither shaping lets
a completion raise its reward by writing more steps: Clip's terms are never positive, Delta's sum
to s_1 whatever their number. A completion with no steps gets its outcome alone.

It needs a reference that is a number (arithmetic, GSM8K `#### n`): answers that need
math-verify (`\\boxed{}`, LaTeX) are `verify`'s job, and this server runs nothing that could hang.

Run alone:  JETRL_LISTEN=0.0.0.0:50058 python -m svc_reward.process
with options from JETRL_PROCESS_* (ProcessOptions), e.g. JETRL_PROCESS_SHAPING=delta.
"""

from __future__ import annotations

from typing import Literal

import grpc
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from jetrl.tasks.answers import read_number
from jetrl.v1 import reward_pb2
from svc_reward import steps, verify
from svc_reward.agreement import BuiltinServicer, serve_alone
from svc_reward.server import CONTRACT_VERSIONS, reference_problem

NAME, VERSION = "process", "1"


class ProcessOptions(BaseSettings):
    """How step scores become a reward, read from `JETRL_PROCESS_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="JETRL_PROCESS_", extra="ignore", use_attribute_docstrings=True)

    shaping: Literal["clip", "delta"] = "clip"
    """`clip`: r_k = min(s_k - threshold, 0), wrong steps cost and correct ones add nothing;
    `delta`: r_k = s_k - s_{k+1}, whose sum is the first step's score."""
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    """η of Clip: what a wrong step (s_k = 0) costs; a correct one (s_k = 1) never costs, and at 0 no step does."""
    step_weight: float = Field(1.0, ge=0.0, le=10.0)
    """Multiplier on the shaped sum, against the outcome's 1; 0 leaves the outcome alone."""


def _invalid(request: reward_pb2.ScoreRequest) -> str | None:
    """Why the request cannot be scored, phrased as what the caller should do; None when it can."""
    if (problem := reference_problem(request, NAME, VERSION, " for its outcome term")) is not None:
        return problem
    reference = verify.reference_answer(request.reference)
    if read_number(reference) is None:
        return f"{NAME} compares exact numbers; the reference {reference!r} is not one: use verify for maths answers"
    return None


class ProcessServicer(BuiltinServicer):
    name, version = NAME, VERSION

    def __init__(self, options: ProcessOptions) -> None:
        self.options = options

    async def Describe(self, request, context) -> reward_pb2.DescribeResponse:
        return reward_pb2.DescribeResponse(
            name=NAME, version=VERSION, contract_versions=CONTRACT_VERSIONS, needs_reference=True
        )

    def score(self, reference: str, sample: reward_pb2.RewardSample) -> reward_pb2.SampleScore:
        # A numeric reference gets None from exact_score only for a `\boxed{}` answer.
        outcome = verify.exact_score(reference, sample.text) or verify.Score(
            0.0, "", "answer in \\boxed{}: process compares plain final numbers; use verify for LaTeX"
        )
        found = steps.steps(sample.text)
        scores = [s.score for s in found]
        shaped = self.options.step_weight * sum(steps.shape(scores, self.options.shaping, self.options.threshold))
        wrong = sum(not s.holds for s in found)
        return reward_pb2.SampleScore(
            sample_id=sample.sample_id,
            reward=outcome.reward + shaped,
            extracted_answer=outcome.extracted,
            step_scores=scores,
            detail=(
                f"outcome {outcome.reward:g} ({outcome.detail}), {len(found)} steps, {wrong} wrong, "
                f"{self.options.shaping} {shaped:+g}"
            ),
        )

    async def Score(self, request, context) -> reward_pb2.ScoreResponse:
        error = _invalid(request)
        if error is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
        # Inline: a linear regex scan and fraction arithmetic, ~0.2 ms for a GSM8K reference answer.
        return reward_pb2.ScoreResponse(
            scores=[self.score(request.reference, s) for s in request.views[0].samples],
            server=f"{NAME}@{VERSION}",
        )


if __name__ == "__main__":
    serve_alone(ProcessServicer(ProcessOptions()))
