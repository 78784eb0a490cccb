"""The built-in `majority` reward server: agreement with the group's own majority answer
(self-consistency, TTRL-style). It needs no reference answer, so it trains without labels.

Run alone:  JETRL_LISTEN=0.0.0.0:50055 python -m svc_reward.majority
and name it in a run spec:  reward: {endpoint: HOST:50055}. The rule: svc_reward/consensus.py.
"""

from __future__ import annotations

import grpc

from jetrl.service import run_service, serve
from jetrl.v1 import reward_pb2, reward_pb2_grpc
from svc_reward.consensus import majority_rewards
from svc_reward.server import CONTRACT_VERSIONS, contract_problem

NAME, VERSION = "majority", "1"
DEFAULT_PORT = 50055


class MajorityServicer(reward_pb2_grpc.RewardServiceServicer):
    async def Describe(self, request, context) -> reward_pb2.DescribeResponse:
        return reward_pb2.DescribeResponse(name=NAME, version=VERSION, contract_versions=CONTRACT_VERSIONS)

    async def Score(self, request, context) -> reward_pb2.ScoreResponse:
        if (problem := contract_problem(request, f"{NAME}@{VERSION}")) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        samples = request.views[0].samples
        vote = majority_rewards([s.text for s in samples])
        label = vote.label or ""
        return reward_pb2.ScoreResponse(
            scores=[reward_pb2.SampleScore(
                sample_id=s.sample_id, reward=r, extracted_answer=a or "", pseudo_label=label,
                detail=("no answer" if a is None else "agrees with the majority" if r else
                        f"majority answer is {label}"),
            ) for s, r, a in zip(samples, vote.rewards, vote.answers)],
            server=f"{NAME}@{VERSION}",
        )


def register(server: grpc.aio.Server) -> list[str]:
    reward_pb2_grpc.add_RewardServiceServicer_to_server(MajorityServicer(), server)
    return [reward_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name]


async def main(settings) -> None:
    await serve("svc_reward.majority", settings.listen_or(DEFAULT_PORT), register)


if __name__ == "__main__":
    run_service("svc_reward.majority", main)
