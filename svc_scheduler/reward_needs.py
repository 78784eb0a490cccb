"""Before a run starts: does each of its reward servers get what its `Describe` says it needs?

A co_reward server on a run without the analogous view, or a teacher server on a run without a
teacher, would refuse every group; the run would go on with the failure policy's zeros. Asking
first turns that into a clear INVALID_ARGUMENT at CreateRun. A server that cannot be reached now
is not a reason to refuse: it may come up later, and the failure policy covers it meanwhile.
"""

from __future__ import annotations

import logging

import grpc

from jetrl.config import RunSpec
from jetrl.logs import log_fields
from jetrl.rpc import channel
from jetrl.v1 import reward_pb2, reward_pb2_grpc

log = logging.getLogger(__name__)


def unmet(spec: RunSpec, describe: reward_pb2.DescribeResponse) -> list[str]:
    """What the server needs that this run does not give it, each as what to change. (Every task
    has reference answers today, so `needs_reference` is always met.)"""
    name = f"{describe.name}@{describe.version}"
    problems = []
    if describe.needs_views and not spec.rollout.analogous_view:
        problems.append(f"{name} needs the analogous view: set rollout.analogous_view: true")
    if describe.needs_teacher_samples and spec.teacher is None:
        problems.append(f"{name} needs the EMA teacher's samples: add a `teacher:` section")
    return problems


async def check_reward_needs(spec: RunSpec, default_endpoint: str, timeout: float = 3.0) -> list[str]:
    """Every unmet need of every reachable reward endpoint of the run."""
    addresses = [e.address for e in spec.reward.endpoints] or [default_endpoint]
    problems = []
    for address in addresses:
        async with channel(address) as ch:
            try:
                describe = await reward_pb2_grpc.RewardServiceStub(ch).Describe(
                    reward_pb2.DescribeRequest(), timeout=timeout
                )
            except grpc.aio.AioRpcError as exc:
                log.warning("reward endpoint not checked", extra=log_fields(endpoint=address, error=exc.code().name))
                continue
        problems += [f"reward endpoint {address}: {p}" for p in unmet(spec, describe)]
    return problems
