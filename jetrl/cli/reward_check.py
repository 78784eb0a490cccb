"""`jetrl reward check HOST:PORT`: does a reward server keep the Reward contract?

Any implementation, in any language, can be checked before a run names it. Each check sends a
real request (protos/jetrl/v1/reward.proto) and prints what passed and, for what failed, what the
server did and what the contract wants. The group sent is synthetic: a reference answer when the
server needs one, the analogous view when it needs views, the teacher's samples when it needs them
(in the order the reward stage sends them: the scored view first, the other trained views, then
the teacher's).

A Score reply passes when it has one score per sample of the main view, in order, each naming its
sample (none unknown, missing or twice), every reward a finite number within the default
`reward.max_abs_reward`, within the deadline; the same again for the samples in another order. A
run's reward stage fails a call on any of these but order (it matches by id), so a server that
passes here is never a failed call for its replies' sake.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from rich.console import Console

from jetrl.config import Settings
from jetrl.rpc import channel
from jetrl.rpc_security import LOCAL, ClientCredentials
from jetrl.spec_sections import RewardSpec
from jetrl.v1 import reward_pb2, reward_pb2_grpc

__all__ = ["Check", "check_server", "main"]

console = Console()
TEXTS = ["12", "12", "13", "no answer"]
MAX_ABS_REWARD = RewardSpec.model_fields["max_abs_reward"].default


class CheckFailed(Exception):
    """A check's verdict and what to fix (raised, not asserted: `python -O` must not pass a server)."""


def _require(ok: object, message: str) -> None:
    if not ok:
        raise CheckFailed(message)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _request(
    describe: reward_pb2.DescribeResponse, group: str = "check.g0", reverse: bool = False, **fields
) -> reward_pb2.ScoreRequest:
    """The synthetic group; `reverse` sends every view's samples in the opposite order."""
    order = list(enumerate(TEXTS))[:: -1 if reverse else 1]

    def view(name: str, prefix: str) -> reward_pb2.RewardView:
        return reward_pb2.RewardView(
            view=name,
            prompt="5+7=",
            samples=[reward_pb2.RewardSample(sample_id=f"{prefix}.{i}", text=t) for i, t in order],
        )

    views = (
        [view("main", group)]
        + ([view("analogous", f"{group}a")] if describe.needs_views else [])
        + ([view("teacher", f"{group}t")] if describe.needs_teacher_samples else [])
    )
    base: dict[str, Any] = {
        "contract_version": 1,
        "run_id": "reward-check",
        "group_id": group,
        "policy_version": 0,
        "reference": "12" if describe.needs_reference else "",
        "views": views,
    }
    return reward_pb2.ScoreRequest(**(base | fields))


def _check_reply(request: reward_pb2.ScoreRequest, reply: reward_pb2.ScoreResponse, max_abs_reward: float) -> None:
    """CheckFailed saying what is wrong with the reply, if anything."""
    sent = [s.sample_id for s in request.views[0].samples]
    got = [s.sample_id for s in reply.scores]
    _require(len(got) == len(sent), f"{len(got)} scores for {len(sent)} samples of the main view: one each")
    _require(
        any(got),
        "no score names its sample: set SampleScore.sample_id (runs still match a reply naming none "
        "by position, as contract 1 did, but any reordering would then train wrong rewards)",
    )
    _require(all(got), f"{got.count('')} of {len(got)} scores name no sample: name every one")
    twice = sorted(i for i, n in Counter(got).items() if n > 1)
    _require(not twice, f"samples {twice} are scored more than once: one score per sample")
    unknown = [i for i in got if i not in sent]
    _require(not unknown, f"scores name {unknown}, which are not samples of the request")
    _require(got == sent, f"scores name samples {got}, want {sent} in that order")
    rewards = [s.reward for s in reply.scores]
    _require(all(math.isfinite(r) for r in rewards), f"rewards {rewards}: every reward must be a finite number")
    _require(
        all(abs(r) <= max_abs_reward for r in rewards),
        f"rewards {rewards}: a run refuses any beyond ±{max_abs_reward:g} (reward.max_abs_reward)",
    )
    _require(reply.server, "ScoreResponse.server must say name@version")


async def check_server(
    addr: str, credentials: ClientCredentials = LOCAL, deadline_s: float = 10.0, max_abs_reward: float = MAX_ABS_REWARD
) -> list[Check]:
    """Every check against the server at `addr`, in order; later ones are skipped if Describe fails.
    `credentials`: as the reward stage calls it (ClientCredentials.of(settings, reward=True))."""
    checks: list[Check] = []
    async with channel(addr, credentials) as ch:
        stub = reward_pb2_grpc.RewardServiceStub(ch)

        async def attempt(name: str, call: Callable[[], Awaitable[str]]) -> None:
            try:
                checks.append(Check(name, True, await call()))
            except CheckFailed as exc:
                checks.append(Check(name, False, str(exc)))
            except grpc.aio.AioRpcError as exc:
                what = (
                    "no answer within the deadline"
                    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                    else f"{exc.code().name}: {exc.details()}"
                )
                checks.append(Check(name, False, what))

        describe = reward_pb2.DescribeResponse()

        async def do_describe() -> str:
            nonlocal describe
            describe = await stub.Describe(reward_pb2.DescribeRequest(), timeout=deadline_s)
            _require(describe.name and describe.version, "Describe must name the server and its version")
            _require(1 in describe.contract_versions, f"contract_versions {list(describe.contract_versions)} lack 1")
            return (
                f"{describe.name}@{describe.version}, needs reference: {describe.needs_reference}, "
                f"views: {describe.needs_views}, teacher samples: {describe.needs_teacher_samples}"
            )

        await attempt("Describe", do_describe)
        if not checks[-1].ok:
            return checks

        async def do_score(request: reward_pb2.ScoreRequest) -> str:
            start = time.monotonic()
            reply = await stub.Score(request, timeout=deadline_s)
            took = time.monotonic() - start
            _check_reply(request, reply, max_abs_reward)
            return (
                f"{len(reply.scores)} rewards within ±{max_abs_reward:g}, named and in order, in "
                f"{took * 1000:.0f} ms: {[round(s.reward, 3) for s in reply.scores]}"
            )

        async def do_refuse() -> str:
            try:
                await stub.Score(_request(describe, contract_version=999), timeout=deadline_s)
            except grpc.aio.AioRpcError as exc:
                _require(
                    exc.code() == grpc.StatusCode.INVALID_ARGUMENT,
                    f"an unknown contract version got {exc.code().name}, want INVALID_ARGUMENT",
                )
                return "INVALID_ARGUMENT: " + (exc.details() or "")
            raise CheckFailed(
                "contract_version 999 was scored: refuse versions you do not know "
                "(INVALID_ARGUMENT), so an old server never misreads a new request"
            )

        await attempt("Score", lambda: do_score(_request(describe)))
        await attempt("Score, samples in another order", lambda: do_score(_request(describe, "check.g1", reverse=True)))
        await attempt("refuses an unknown contract version", do_refuse)
    return checks


async def main(settings: Settings, addr: str, deadline_s: float) -> int:
    checks = await check_server(addr, ClientCredentials.of(settings, reward=True), deadline_s)
    for c in checks:
        mark = "[green]pass[/green]" if c.ok else "[red]FAIL[/red]"
        console.print(f"{mark}  {c.name}: {c.detail}", highlight=False)
    failed = sum(not c.ok for c in checks)
    console.print(
        f"{addr}: {len(checks) - failed}/{len(checks)} checks passed"
        if not failed
        else f"[red]{addr}: {failed} of {len(checks)} checks failed[/red]"
    )
    return 1 if failed else 0
