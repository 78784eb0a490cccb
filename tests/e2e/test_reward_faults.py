"""End to end: a reward server that misbehaves either has the run trained on the right rewards or
ends it FAILED with a message naming the endpoint and the reason, within its deadline budget;
never a stall, never a dead letter, never a reward that is not a finite number in lineage.

Each faulty server is this file run as a script (`python test_reward_faults.py FAULT PORT [LOG]`),
a process of its own, ended by its pid. Its rewards are the `verify` server's plus a tiebreak of
index / 100, so every sample of a group has its own reward and a misplaced score always shows.
"""

from __future__ import annotations

import asyncio
import math
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from jetrl.lineage.models import Prompt, PromptGroup, Sample
from jetrl.localstack import free_port
from jetrl.v1 import reward_pb2, reward_pb2_grpc
from jetrl.v1 import services_pb2 as svc
from runs import create_run, finished, run_id, trainer_count, wait_until
from svc_reward.verify import score

pytestmark = pytest.mark.timeout(600)

FAULTS = ("nan", "reversed", "huge", "slow-first", "broken")
HANG_S = 60.0  # far past any deadline below


def right_rewards(request: reward_pb2.ScoreRequest) -> list[reward_pb2.SampleScore]:
    return [
        reward_pb2.SampleScore(sample_id=s.sample_id, reward=score(request.reference, s.text).reward + i / 100)
        for i, s in enumerate(request.views[0].samples)
    ]


class Faulty(reward_pb2_grpc.RewardServiceServicer):
    """nan: NaN for each group's first sample. reversed: the right scores, named, in reverse order.
    huge: 1e30 for every sample. slow-first: a group's first call hangs, its retry answers right.
    broken: every call fails. Each call is logged to `log` as `<monotonic time> <group id>`."""

    def __init__(self, fault: str, log: Path | None):
        self.fault, self.log, self.seen = fault, log, set()

    async def Describe(self, request, context):
        return reward_pb2.DescribeResponse(name=self.fault, version="0", contract_versions=[1], needs_reference=True)

    async def Score(self, request, context):
        if self.log:
            with self.log.open("a") as f:
                f.write(f"{time.monotonic()} {request.group_id}\n")
        scores = right_rewards(request)
        if self.fault == "nan":
            scores[0].reward = math.nan
        elif self.fault == "reversed":
            scores.reverse()
        elif self.fault == "huge":
            for s in scores:
                s.reward = 1e30
        elif self.fault == "slow-first" and request.group_id not in self.seen:
            self.seen.add(request.group_id)
            await asyncio.sleep(HANG_S)
        elif self.fault == "broken":
            await context.abort(grpc.StatusCode.INTERNAL, "broken on purpose")
        return reward_pb2.ScoreResponse(scores=scores, server=f"{self.fault}@0")


async def serve(fault: str, port: int, log: Path | None) -> None:
    server = grpc.aio.server()
    reward_pb2_grpc.add_RewardServiceServicer_to_server(Faulty(fault, log), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


@contextmanager
def fault_server(fault: str, log: Path | None = None):
    """This file as a reward server with `fault`, on a free port; yields its address; ended by its pid."""
    assert fault in FAULTS
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, fault, str(port), *([str(log)] if log else [])])
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


async def ready(addr: str) -> None:
    async with grpc.aio.insecure_channel(addr) as ch:
        await asyncio.wait_for(ch.channel_ready(), 60)


async def run(
    stack,
    name: str,
    addr: str,
    reward: str = "",
    steps: int = 2,
    batch_groups: int = 2,
    group_size: int = 4,
    advantage: str = "grpo",
    timeout: float = 180.0,
) -> tuple[str, svc.RunProgress, float]:
    """Submit a tiny run scored by `addr` alone; (run id, its last progress, seconds until it ended)."""
    await ready(addr)
    rid = run_id(name)
    spec = stack.spec_yaml(
        name,
        steps=steps,
        batch_groups=batch_groups,
        group_size=group_size,
        reward=f"reward: {{endpoint: '{addr}', {reward}}}",
    )
    spec = spec.replace("lr: 0.001}", f"lr: 0.001, advantage: {advantage}}}")
    start = time.monotonic()
    await create_run(stack, spec, rid)
    last = await wait_until(stack, rid, finished, timeout=timeout)
    return rid, last, time.monotonic() - start


async def lineage_rewards(store, rid: str) -> list[tuple[float | None, float | None, bool]]:
    """(reward in lineage, what the right server gives, trained) of every sample of the run."""
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(Sample.reward, Sample.text, Sample.index, Prompt.reference, Sample.trained_version)
                .join(PromptGroup, PromptGroup.group_id == Sample.group_id)
                .join(Prompt, (Prompt.run_id == PromptGroup.run_id) & (Prompt.prompt_id == PromptGroup.prompt_id))
                .where(Sample.run_id == rid)
            )
        ).all()
    return [(r, score(ref, text).reward + i / 100, trained is not None) for r, text, i, ref, trained in rows]


async def assert_failed_loudly(store, rid: str, last: svc.RunProgress, addr: str, *reasons: str) -> None:
    assert last.state == svc.FAILED, last
    assert addr in last.message and all(r in last.message for r in reasons), last.message
    assert last.policy_version == 0  # it failed before a batch of failed groups was trained
    assert not await store.reports.dead_letters(rid)
    assert all(r is None or math.isfinite(r) for r, _, _ in await lineage_rewards(store, rid))


async def test_a_nan_reward_fails_the_run_naming_the_endpoint_never_a_dead_letter(stack, store):
    with fault_server("nan") as addr:
        rid, last, _ = await run(stack, "reward-nan", addr, "deadline_s: 5, retries: 0")
    await assert_failed_loudly(
        store, rid, last, addr, "every reward must be a finite number", "reward.max_failed_share: 0.9"
    )


async def test_scores_in_another_order_are_trained_on_the_right_samples(stack, store):
    steps, b, g = 2, 2, 4
    with fault_server("reversed") as addr:
        rid, last, _ = await run(
            stack, "reward-reversed", addr, "deadline_s: 5", steps=steps, batch_groups=b, group_size=g
        )
    assert last.state == svc.COMPLETED, last.message
    rows = [(got, right) for got, right, trained in await lineage_rewards(store, rid) if trained]
    assert len(rows) == steps * b * g == await trainer_count(stack, rid)
    assert all(got == pytest.approx(right, abs=1e-6) for got, right in rows), rows


async def test_a_huge_reward_with_dr_grpo_fails_the_run_at_the_bound(stack, store):
    with fault_server("huge") as addr:
        rid, last, _ = await run(stack, "reward-huge", addr, "deadline_s: 5, retries: 0", advantage="dr_grpo")
    await assert_failed_loudly(store, rid, last, addr, "beyond the run's bound (reward.max_abs_reward: 100)")


async def test_a_hanging_server_costs_one_deadline_budget_at_a_time_not_one_per_group(stack, store, tmp_path):
    steps, b, g, deadline, retries = 2, 4, 2, 2.0, 1
    log = tmp_path / "calls"
    with fault_server("slow-first", log) as addr:
        rid, last, took = await run(
            stack,
            "reward-hang",
            addr,
            f"deadline_s: {deadline}, retries: {retries}",
            steps=steps,
            batch_groups=b,
            group_size=g,
        )
    assert last.state == svc.COMPLETED, last.message
    rows = [(got, right) for got, right, trained in await lineage_rewards(store, rid) if trained]
    assert len(rows) == steps * b * g and all(got == pytest.approx(right, abs=1e-6) for got, right in rows)
    # every group's first call hung; scored one group at a time, each next group's first call would
    # come a whole deadline after the one before
    first: dict[str, float] = {}
    for line in log.read_text().splitlines():
        at, group = line.split()
        first.setdefault(group, float(at))
    starts = sorted(first.values())
    assert len(starts) >= steps * b
    assert min(later - earlier for earlier, later in zip(starts, starts[1:])) < deadline, starts
    assert took < steps * b * (retries + 1) * deadline  # less than (retries + 1) x deadline per group


async def test_a_server_failing_every_call_under_on_failure_zero_fails_the_run(stack, store):
    with fault_server("broken") as addr:
        rid, last, _ = await run(stack, "reward-broken", addr, "deadline_s: 2, retries: 1, on_failure: zero")
    await assert_failed_loudly(store, rid, last, addr, "INTERNAL: broken on purpose", "reward.max_failed_share: 0.9")


if __name__ == "__main__":
    fault, port, *log = sys.argv[1:]
    asyncio.run(serve(fault, int(port), Path(log[0]) if log else None))
