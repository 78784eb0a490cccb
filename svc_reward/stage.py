"""The reward stage: takes complete prompt groups off the bus, has the run's reward endpoint score
them over gRPC (deadline, retries with backoff), publishes the scored groups.

A group whose endpoint keeps failing is not acked: the consume helper retries it later and, after
the consumer's max_deliver, dead-letters it with the reason, so a dead reward server shows up in
the run's dead-letter count instead of stalling silently.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from jetrl.bus import Delivery, InvalidEvent, Kind, publish
from jetrl.logs import log_fields
from jetrl.rpc import channel
from jetrl.runs import RunNotFound, RunSpecs
from jetrl.v1 import events_pb2, reward_pb2, reward_pb2_grpc

log = logging.getLogger(__name__)
CONTRACT_VERSION = 1


class RewardUnavailable(RuntimeError):
    """The endpoint did not answer correctly within its deadline and retries."""


def score_request(group: events_pb2.PromptGroup) -> reward_pb2.ScoreRequest:
    """The Reward contract's view of a prompt group."""
    return reward_pb2.ScoreRequest(
        contract_version=CONTRACT_VERSION, run_id=group.run_id, group_id=group.group_id,
        policy_version=group.policy_version, reference=group.reference,
        views=[reward_pb2.RewardView(
            view="main", prompt=group.prompt,
            samples=[reward_pb2.RewardSample(
                sample_id=s.sample_id, text=s.text, completion_token_ids=s.completion_token_ids
            ) for s in group.samples],
        )],
    )


class RewardStage:
    def __init__(self, js, specs: RunSpecs, default_endpoint: str):
        self.js = js
        self.specs = specs
        self.default_endpoint = default_endpoint
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, endpoint: str) -> reward_pb2_grpc.RewardServiceStub:
        if endpoint not in self._channels:
            self._channels[endpoint] = channel(endpoint)
        return reward_pb2_grpc.RewardServiceStub(self._channels[endpoint])

    async def score(self, endpoint: str, request: reward_pb2.ScoreRequest, deadline: float, retries: int):
        """Score with a deadline per call and exponential backoff between attempts."""
        n = len(request.views[0].samples)
        error = ""
        for attempt in range(retries + 1):
            try:
                reply = await self._stub(endpoint).Score(request, timeout=deadline)
                if len(reply.scores) == n:
                    return reply
                error = f"{endpoint} returned {len(reply.scores)} scores for {n} samples"
            except grpc.aio.AioRpcError as exc:
                error = f"{endpoint}: {exc.code().name}: {exc.details()}"
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    break  # the same request will be refused again
            log.warning("reward call failed", extra=log_fields(group=request.group_id, attempt=attempt, error=error))
            if attempt < retries:
                await asyncio.sleep(min(0.5 * 2**attempt, 8.0))
        raise RewardUnavailable(error)

    async def on_group(self, group: events_pb2.PromptGroup, delivery: Delivery) -> None:
        try:
            spec = await self.specs.get(group.run_id)
        except RunNotFound as exc:
            raise InvalidEvent(str(exc)) from None
        endpoint = spec.reward.endpoint or self.default_endpoint
        reply = await self.score(endpoint, score_request(group), spec.reward.deadline_s, spec.reward.retries)
        scored = events_pb2.ScoredGroup(
            group=group, rewards=[s.reward for s in reply.scores], details=reply.scores,
            reward_server=reply.server, reward_endpoint=endpoint,
        )
        await publish(self.js, group.run_id, Kind.SCORED, scored, msg_id=group.group_id)

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
