"""Before a run starts, CreateRun asks the services it will use whether they can serve it.

- Each reward server (`Describe`): does the run give it what it needs? A co_reward server on a
  run without the analogous view, or a teacher server on a run without a teacher, would refuse
  every group and the run would go on with the failure policy's zeros.
- A rollout worker (`CheckRun`): can it build the run's `rollout.engine`, read its model
  directory, and (vLLM) serve its architecture? Otherwise the run would fail at its first task.
- The trainer (`CheckRun`): can it build the run's `train.engine` (DeepSpeed installed, its
  config file readable and not fighting the run spec, as many GPUs as ranks)?

Each finding becomes a clear INVALID_ARGUMENT saying what to change. A service that cannot be
reached now is not a reason to refuse: it may come up later (from another image, say), and the
run's own failure paths cover it meanwhile (the reward failure policy; for the engine,
svc_rollout/policies.py:EngineUnavailable, which fails the run with the same advice).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from jetrl.config import RunSpec, Settings, dump_spec
from jetrl.logs import log_fields
from jetrl.rpc import channel
from jetrl.rpc_security import ClientCredentials
from jetrl.v1 import reward_pb2, reward_pb2_grpc, services_pb2, services_pb2_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Peers:
    """Whom CreateRun asks, and with which credentials: the reward servers get the reward token
    only (jetrl/rpc_security.py), the rollout worker and the trainer the stack's."""

    reward_addr: str  # the built-in reward server, for runs that name none
    rollout_addr: str
    trainer_addr: str
    stack: ClientCredentials
    rewards: ClientCredentials

    @classmethod
    def of(cls, settings: Settings) -> Peers:
        return cls(
            settings.reward_addr,
            settings.rollout_addr,
            settings.trainer_addr,
            ClientCredentials.of(settings),
            ClientCredentials.of(settings, reward=True),
        )

    async def problems(self, spec: RunSpec) -> list[str]:
        """Every reason found why the run cannot run, each as what to change."""
        return (
            await check_reward_needs(spec, self.reward_addr, self.rewards)
            + await check_rollout(spec, self.rollout_addr, self.stack)
            + await check_trainer(spec, self.trainer_addr, self.stack)
        )


async def _ask(
    address: str, credentials: ClientCredentials, call: Callable[[grpc.aio.Channel], Awaitable[T]]
) -> T | None:
    """`call` on a channel to `address`; None when the service does not answer."""
    async with channel(address, credentials) as ch:
        try:
            return await call(ch)
        except grpc.aio.AioRpcError as exc:
            log.warning("not checked before the run", extra=log_fields(endpoint=address, error=exc.code().name))
            return None


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


async def check_reward_needs(
    spec: RunSpec, default_endpoint: str, credentials: ClientCredentials, timeout: float = 3.0
) -> list[str]:
    """Every unmet need of every reachable reward endpoint of the run."""
    problems = []
    for address in [e.address for e in spec.reward.endpoints] or [default_endpoint]:
        describe = await _ask(
            address,
            credentials,
            lambda ch: reward_pb2_grpc.RewardServiceStub(ch).Describe(reward_pb2.DescribeRequest(), timeout=timeout),
        )
        if describe is not None:
            problems += [f"reward endpoint {address}: {p}" for p in unmet(spec, describe)]
    return problems


async def check_rollout(
    spec: RunSpec, rollout_addr: str, credentials: ClientCredentials, timeout: float = 60.0
) -> list[str]:
    """Why a rollout worker at `rollout_addr` cannot serve the run, as it sees things (the engine,
    the model directory, vLLM's architectures: svc_rollout/checks.py). The first vLLM check imports
    vLLM in the worker, which takes seconds: hence the longer timeout."""
    return await _check_run(
        spec,
        f"rollout worker at {rollout_addr}",
        rollout_addr,
        credentials,
        services_pb2_grpc.RolloutServiceStub,
        timeout,
    )


async def check_trainer(
    spec: RunSpec, trainer_addr: str, credentials: ClientCredentials, timeout: float = 60.0
) -> list[str]:
    """Why the trainer at `trainer_addr` cannot train the run (svc_trainer/server.py:CheckRun); the
    first DeepSpeed check imports DeepSpeed there, which takes seconds. Only a DeepSpeed run has
    anything to check there."""
    if spec.train.engine != "deepspeed":
        return []
    return await _check_run(
        spec, f"trainer at {trainer_addr}", trainer_addr, credentials, services_pb2_grpc.TrainerServiceStub, timeout
    )


async def _check_run(
    spec: RunSpec, who: str, address: str, credentials: ClientCredentials, stub, timeout: float
) -> list[str]:
    """A service's CheckRun answer for the run, each problem prefixed with `who`; none if it does not answer."""
    reply = await _ask(
        address,
        credentials,
        lambda ch: stub(ch).CheckRun(services_pb2.CheckRunRequest(spec_yaml=dump_spec(spec)), timeout=timeout),
    )
    return [f"{who}: {p}" for p in reply.problems] if reply is not None else []
