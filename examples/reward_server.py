"""An example third-party reward server, written only against the generated stubs (jetrl/v1,
from protos/jetrl/v1/reward.proto) and grpcio: copy it, change `reward`, name it in a run spec.

Run:    python examples/reward_server.py --port 50060
Check:  jetrl reward check 127.0.0.1:50060
Use:    reward: {endpoint: 127.0.0.1:50060}     (in a run spec)

Its rule, a deliberately simple one: 1.0 when the completion, stripped, is exactly the
reference answer (no extra text at all), else 0.0.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc

from jetrl.v1 import reward_pb2, reward_pb2_grpc

NAME, VERSION, CONTRACT_VERSIONS = "exact-text", "1", (1,)


def reward(reference: str, text: str) -> float:
    return float(text.strip() == reference.strip())


class ExactText(reward_pb2_grpc.RewardServiceServicer):
    async def Describe(self, request, context):
        return reward_pb2.DescribeResponse(
            name=NAME, version=VERSION, contract_versions=CONTRACT_VERSIONS, needs_reference=True
        )

    async def Score(self, request, context):
        if request.contract_version not in CONTRACT_VERSIONS or not request.views or not request.reference:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{NAME} wants contract_version 1, a main view and a reference answer"
            )
        return reward_pb2.ScoreResponse(
            scores=[
                reward_pb2.SampleScore(sample_id=s.sample_id, reward=reward(request.reference, s.text))
                for s in request.views[0].samples
            ],
            server=f"{NAME}@{VERSION}",
        )


async def serve(port: int) -> None:
    server = grpc.aio.server()
    reward_pb2_grpc.add_RewardServiceServicer_to_server(ExactText(), server)
    server.add_insecure_port(f"0.0.0.0:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=50060)
    asyncio.run(serve(parser.parse_args().port))
