"""One RewardService for the label-free servers that score by agreement (svc_reward/consensus.py):
each server module names itself and says how a request becomes a `Vote`; this module does the
contract checks, the response, and serving the module alone on its own port (`serve_alone`, which
the other built-in servers that run alone use too).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from jetrl import ports
from jetrl.rpc_security import ServerSecurity
from jetrl.service import run_service, serve
from jetrl.v1 import reward_pb2, reward_pb2_grpc
from jetrl.views import TEACHER
from svc_reward.consensus import Vote
from svc_reward.server import CONTRACT_VERSIONS, contract_problem, reward_register

Rule = Callable[[reward_pb2.ScoreRequest], Vote]


def texts(view: reward_pb2.RewardView) -> list[str]:
    return [s.text for s in view.samples]


def teacher_view(request: reward_pb2.ScoreRequest) -> reward_pb2.RewardView | None:
    return next((v for v in request.views if v.view == TEACHER), None)


class BuiltinServicer(reward_pb2_grpc.RewardServiceServicer):
    """A built-in RewardService servicer: `name` and `version` say which (and name its process)."""

    name: str
    version: str


class AgreementServicer(BuiltinServicer):
    def __init__(
        self, name: str, version: str, rule: Rule, needs_views: bool = False, needs_teacher_samples: bool = False
    ):
        self.name, self.version, self.rule = name, version, rule
        self.needs_views, self.needs_teacher_samples = needs_views, needs_teacher_samples

    async def Describe(self, request, context) -> reward_pb2.DescribeResponse:
        return reward_pb2.DescribeResponse(
            name=self.name,
            version=self.version,
            contract_versions=CONTRACT_VERSIONS,
            needs_views=self.needs_views,
            needs_teacher_samples=self.needs_teacher_samples,
        )

    async def Score(self, request, context) -> reward_pb2.ScoreResponse:
        problem = contract_problem(request, f"{self.name}@{self.version}")
        if problem is None and self.needs_views and (len(request.views) < 2 or request.views[1].view == TEACHER):
            problem = (
                f"{self.name} needs the analogous view of the prompt as views[1], with its own samples: "
                "set rollout.analogous_view in the run spec"
            )
        if problem is None and self.needs_teacher_samples and not teacher_view(request):
            problem = (
                f"{self.name} needs the EMA teacher's samples as a view named {TEACHER!r}: "
                "give the run spec a `teacher:` section"
            )
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        vote = self.rule(request)
        label = vote.label or ""
        return reward_pb2.ScoreResponse(
            scores=[
                reward_pb2.SampleScore(
                    sample_id=s.sample_id,
                    reward=r,
                    extracted_answer=a or "",
                    pseudo_label=label,
                    detail="no answer"
                    if a is None
                    else "agrees with the pseudo-label"
                    if r
                    else f"pseudo-label is {label}",
                )
                for s, r, a in zip(request.views[0].samples, vote.rewards, vote.answers)
            ],
            server=f"{self.name}@{self.version}",
        )


def serve_alone(servicer: BuiltinServicer) -> None:
    """`python -m svc_reward.<name>`: this one server on JETRL_LISTEN (default: every interface on
    its port in jetrl/ports.py).

    Any built-in server, not only an agreement one; its `name` attribute names the process."""
    name = f"svc_reward.{servicer.name}"

    async def main(settings) -> None:
        await serve(
            name,
            settings.listen_or(ports.REWARD_SERVERS[name]),
            reward_register(servicer),
            security=ServerSecurity.of(settings, reward=True),
        )

    run_service(name, main)
