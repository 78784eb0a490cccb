"""The reward stage: takes complete prompt groups off the bus, has every reward endpoint of the
run score them over gRPC (deadline, retries with backoff), publishes the scored groups.

A run may name several endpoints with weights (`reward.endpoints`); a sample's reward is the
weighted sum. Each Score call scores the samples of `views[0]` (the contract), so a group with
several trained views (main and analogous) is scored once per view with that view first and the
others after it: a server that needs the other view (co_reward) or the teacher's samples finds them
there, and a server that knows only one view scores each in turn.

A reply is used only when its scores match the request's samples by id and every reward is finite
and within `reward.max_abs_reward` (`svc_reward.replies`); any other reply is a failed call. An
endpoint that still fails after its retries never stalls the group: the scored group is published
with the failure in its `calls` (that endpoint's share counts 0), and the scheduler applies the
run's `reward.on_failure` (keep with zero, drop the group, or fail the run). Groups are scored
concurrently (`JETRL_REWARD_CONCURRENCY`, svc_reward.app), so a server that hangs costs the run one
deadline budget at a time, not one per group.

The built-in server runs in this process and is called directly (`local`), not over a loopback
gRPC call: the same request, reply, deadline, retries and checks of the reply, without
serialising every group twice and crossing the gRPC stack on both ends (a third of the reward
process's CPU per sample, docs/performance.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Protocol

import grpc
from opentelemetry import trace

from jetrl.bus import Delivery, InvalidEvent, Kind, publish
from jetrl.logs import log_fields
from jetrl.metrics import REWARD_CALL_SECONDS
from jetrl.rpc import channel
from jetrl.rpc_security import LOCAL, ClientCredentials
from jetrl.runs import RunNotFound, RunSpecs
from jetrl.spec_sections import RewardEndpoint, RewardSpec
from jetrl.telemetry import Attr
from jetrl.v1 import events_pb2, reward_pb2, reward_pb2_grpc
from jetrl.views import split
from svc_reward.replies import BadReply, match_scores
from svc_reward.server import Refused

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
CONTRACT_VERSION = 1
# A restarted reward server must be reachable again within seconds, not after gRPC's default
# reconnect backoff (up to 2 minutes), or "the run goes on when it comes back" would lag.
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.min_reconnect_backoff_ms", 200),
]


class LocalScorer(Protocol):
    """A reward server in this process (the built-in verify server): Score without gRPC."""

    async def score(self, request: reward_pb2.ScoreRequest) -> reward_pb2.ScoreResponse:
        """The reply; raises Refused with the status a gRPC caller would get instead."""
        ...


class RewardUnavailable(RuntimeError):
    """The endpoint did not answer correctly within its deadline and retries."""

    def __init__(self, message: str, attempts: int):
        super().__init__(message)
        self.attempts = attempts


def score_requests(group: events_pb2.PromptGroup) -> list[tuple[list[int], reward_pb2.ScoreRequest]]:
    """(positions in group.samples, request) per trained view: that view as views[0], then the
    other trained views, then the context-only ones (teacher samples)."""
    views = []
    for view, positions in split(group):
        views.append(
            (
                view.trained,
                positions,
                reward_pb2.RewardView(
                    view=view.view,
                    prompt=view.prompt,
                    samples=[
                        reward_pb2.RewardSample(
                            sample_id=group.samples[i].sample_id,
                            text=group.samples[i].text,
                            completion_token_ids=group.samples[i].completion_token_ids,
                        )
                        for i in positions
                    ],
                ),
            )
        )
    requests = []
    for k, (trained, positions, first) in enumerate(views):
        if not trained:
            continue
        others = [v for j, (t, _, v) in enumerate(views) if j != k and t] + [v for t, _, v in views if not t]
        requests.append(
            (
                positions,
                reward_pb2.ScoreRequest(
                    contract_version=CONTRACT_VERSION,
                    run_id=group.run_id,
                    group_id=group.group_id,
                    policy_version=group.policy_version,
                    reference=group.reference,
                    views=[first, *others],
                ),
            )
        )
    return requests


class RewardStage:
    def __init__(
        self,
        js,
        specs: RunSpecs,
        default_endpoint: str,
        credentials: ClientCredentials = LOCAL,
        local: Mapping[str, LocalScorer] | None = None,
    ):
        self.js = js
        self.specs = specs
        self.default_endpoint = default_endpoint
        self.credentials = credentials  # toward reward servers: the reward token, never the stack's
        # endpoint address -> the server at that address when it is this process's own: a caller
        # inside the process needs no token, and its calls need no wire
        self.local = dict(local or {})
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._by_position: set[str] = set()  # endpoints already logged as naming no sample ids

    def _stub(self, endpoint: str) -> reward_pb2_grpc.RewardServiceStub:
        if endpoint not in self._channels:
            self._channels[endpoint] = channel(endpoint, self.credentials, RECONNECT_OPTIONS)
        return reward_pb2_grpc.RewardServiceStub(self._channels[endpoint])

    async def score(
        self, endpoint: str, request: reward_pb2.ScoreRequest, spec: RewardSpec
    ) -> reward_pb2.ScoreResponse:
        """The reply, its scores in the order of the request's samples; a deadline per call
        (`spec.deadline_s`) and exponential backoff between attempts (`spec.retries`). Each
        attempt's duration goes to the reward latency histogram, by endpoint and outcome."""
        error = ""
        for attempt in range(spec.retries + 1):
            started = time.perf_counter()
            try:
                reply = await self._ask(endpoint, request, spec.deadline_s)
                scores, by_position = match_scores(request, reply, spec.max_abs_reward)
                if by_position:
                    self._note_positional(endpoint, reply.server)
                _timed(endpoint, started, "ok")
                return reward_pb2.ScoreResponse(scores=scores, server=reply.server)
            except BadReply as exc:
                error = f"bad reply: {exc}"
            except (grpc.aio.AioRpcError, Refused) as exc:
                error = f"{exc.code().name}: {exc.details()}"
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    _timed(endpoint, started, "error")
                    raise RewardUnavailable(error, attempt + 1) from None  # the same request is refused again
            _timed(endpoint, started, "error")
            log.warning(
                "reward call failed",
                extra=log_fields(group=request.group_id, endpoint=endpoint, attempt=attempt, error=error),
            )
            if attempt < spec.retries:
                await asyncio.sleep(min(0.5 * 2**attempt, 8.0))
        raise RewardUnavailable(error, spec.retries + 1)

    async def _ask(
        self, endpoint: str, request: reward_pb2.ScoreRequest, deadline_s: float
    ) -> reward_pb2.ScoreResponse:
        """One attempt: a direct call when the endpoint is this process's own server, else gRPC."""
        local = self.local.get(endpoint)
        if local is None:
            return await self._stub(endpoint).Score(request, timeout=deadline_s)
        # the span a gRPC call would have had on the server's side, in the group's trace
        with tracer.start_as_current_span("RewardService/Score in process") as span:
            span.set_attributes({Attr.RUN_ID: request.run_id, Attr.GROUP_ID: request.group_id})
            try:
                return await asyncio.wait_for(local.score(request), deadline_s)
            except TimeoutError:
                raise Refused(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None

    def _note_positional(self, endpoint: str, server: str) -> None:
        if endpoint not in self._by_position:
            self._by_position.add(endpoint)
            log.warning(
                "reward server names no sample ids; its scores are matched by position (contract 1)",
                extra=log_fields(endpoint=endpoint, server=server),
            )

    async def _call(
        self, endpoint: RewardEndpoint, group: events_pb2.PromptGroup, spec: RewardSpec
    ) -> tuple[events_pb2.RewardCall, list[reward_pb2.SampleScore]]:
        """One endpoint's rewards for every trained sample of the group (context samples 0)."""
        call = events_pb2.RewardCall(endpoint=endpoint.address, weight=endpoint.weight, ok=True)
        details = [
            reward_pb2.SampleScore(sample_id=s.sample_id, detail="context for rewards; not scored")
            for s in group.samples
        ]
        requests = score_requests(group)
        replies = await asyncio.gather(
            *(self.score(endpoint.address, r, spec) for _, r in requests), return_exceptions=True
        )
        rewards = [0.0] * len(group.samples)
        for (positions, _), reply in zip(requests, replies):
            if isinstance(reply, RewardUnavailable):
                call.ok, call.error = False, str(reply)
                call.attempts = max(call.attempts, reply.attempts)
                continue
            if isinstance(reply, BaseException):
                raise reply
            call.server = reply.server
            call.attempts = max(call.attempts, 1)
            for i, score in zip(positions, reply.scores):
                rewards[i], details[i] = score.reward, score
        call.rewards.extend(rewards if call.ok else [0.0] * len(rewards))
        return call, details

    async def on_group(self, group: events_pb2.PromptGroup, delivery: Delivery) -> None:
        try:
            spec = await self.specs.get(group.run_id)
        except RunNotFound as exc:
            raise InvalidEvent(str(exc)) from None
        endpoints = spec.reward.endpoints or (RewardEndpoint(address=self.default_endpoint),)
        results = await asyncio.gather(*(self._call(e, group, spec.reward) for e in endpoints))
        calls = [c for c, _ in results]
        rewards = [sum(c.weight * c.rewards[i] for c in calls) for i in range(len(group.samples))]
        # details (answers, pseudo-labels, step scores) of the first endpoint that answered
        details = next((d for c, d in results if c.ok), results[0][1])
        first = next((c for c in calls if c.ok), calls[0])
        for c in calls:
            if not c.ok:
                log.warning(
                    "reward endpoint failed", extra=log_fields(group=group.group_id, endpoint=c.endpoint, error=c.error)
                )
        scored = events_pb2.ScoredGroup(
            group=group,
            rewards=rewards,
            details=details,
            reward_server=first.server,
            reward_endpoint=first.endpoint,
            calls=calls,
        )
        await publish(self.js, group.run_id, Kind.SCORED, scored, msg_id=group.group_id)

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()


def _timed(endpoint: str, started: float, outcome: str) -> None:
    REWARD_CALL_SECONDS.record(time.perf_counter() - started, {"endpoint": endpoint, "outcome": outcome})
