"""Every decide-then-publish step survives a crash between the two (jetrl.crash).

For each crash point the service is started with JETRL_CRASH_AT naming it, a run drives it there,
the process dies at that exact place (exit code EXIT_CODE, nothing published, nothing acked),
and it is started again as usual. The run must complete with every invariant intact: every
sample trained exactly once and the trainer's count equal to lineage's.
"""

from __future__ import annotations

import asyncio
import math
import time

import grpc
import pytest

from jetrl.crash import CRASH_POINTS, EXIT_CODE
from jetrl.rpc import is_serving
from jetrl.v1 import services_pb2 as svc
from runs import create_run, finished, run_id, trainer_count, wait_until

pytestmark = pytest.mark.timeout(300)

OVER_PROVISION = 4.0  # ρ
APRIL = dict(
    schedule=f"schedule: {{eval_every: 0, max_staleness: 0, over_provision: {OVER_PROVISION}}}",
    rollout="rollout: {group_size: 4, max_new_tokens: 40}",
    simulation="simulation: {decode_step_s: 0.02, length_median: 10, length_sigma: 0.8, max_length: 40, "
    "train_s_per_token: 0.0, train_s_per_step: 0.2}",
)
# point -> (service it is in, run spec extras that reach it)
CASES = {
    "admit.recorded": ("svc_scheduler", {}),
    "resume.recorded": ("svc_scheduler", APRIL),
    "abort.recorded": ("svc_scheduler", APRIL),
    "samples.recorded": ("svc_scheduler", {}),
    "seal.recorded": ("svc_scheduler", {}),
    "version.head": ("svc_scheduler", {}),
    "end.recorded": ("svc_scheduler", {}),
    "train.saved": ("svc_trainer", {}),
}


def test_every_crash_point_has_a_case():
    assert sorted(CASES) == sorted(CRASH_POINTS)


async def _serving_or_dead(stack, module: str, proc, timeout: float = 90.0) -> None:
    from jetrl.cli.stack import SERVICES

    deadline = time.monotonic() + timeout
    while proc.poll() is None and not await is_serving(getattr(stack.settings, SERVICES[module]), stack.settings):
        assert time.monotonic() < deadline, f"{module} neither served nor crashed in {timeout}s"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("point", sorted(CASES))
async def test_a_crash_at_each_point_loses_nothing(stack, store, point):
    from jetrl.cli.stack import start_service

    module, extra = CASES[point]
    steps, b, g = 3, 2, 4
    stack.stop(module)
    crashing = start_service(stack.settings, module, env={"JETRL_CRASH_AT": point})
    await _serving_or_dead(stack, module, crashing)
    rid = run_id(point.replace(".", "-"))
    try:
        await create_run(stack, stack.spec_yaml(rid, steps=steps, batch_groups=b, group_size=g, **extra), rid)
    except grpc.aio.AioRpcError as exc:  # the scheduler died inside CreateRun, after the run's row
        assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
    assert await asyncio.to_thread(crashing.wait, 240) == EXIT_CODE, f"{module} did not crash at {point}"
    await stack.restart(module)
    last = await wait_until(stack, rid, finished, timeout=240)
    assert last.state == svc.COMPLETED, last.message
    rows = await store.reports.trained_sample_rows(rid)
    assert len(rows) == len({r.sample_id for r in rows}) == steps * b * g == await trainer_count(stack, rid)
    counts = await store.groups.group_counts(rid)
    assert counts["trained"] == steps * b and counts["admitted"] == 0
    # APRIL over-provisions: up to ⌈ρ·B⌉ groups generate for the last batch's B, and every spare
    # that completes before the abort reaches its worker (or while a crashed scheduler has not
    # sent it) is complete, untrained once the run has ended: at most ⌈ρ·B⌉ - B of them
    # (svc_scheduler/admission.py). Without APRIL no group is left over.
    leftover = counts["generated"] + counts["scored"]
    assert leftover <= (math.ceil(OVER_PROVISION * b) - b if "over_provision" in extra.get("schedule", "") else 0), (
        counts
    )
