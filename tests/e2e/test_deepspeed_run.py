"""The trainer on DeepSpeed ranks through the four services (marker `deepspeed`): the run spec is
checked before the run starts, and a SIGKILLed rank makes the trainer exit by itself and come back
with nothing lost or trained twice."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from jetrl.v1 import services_pb2 as svc
from runs import assert_every_sample_trained_once, create_run, finished, run_id, wait_mid_run, wait_until

pytestmark = [pytest.mark.deepspeed, pytest.mark.timeout(600)]
pytest.importorskip("deepspeed")

DEEPSPEED = "lr: 0.001, engine: deepspeed, deepspeed: {ranks: 2, zero_stage: 2, micro_batch_size: 2}}"


def rank_pids(trainer_pid: int) -> list[int]:
    """The trainer's rank processes: its multiprocessing spawn children (not the resource tracker)."""
    pids = []
    for children in Path(f"/proc/{trainer_pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(int(pid))
    return sorted(pids)


async def exit_status(pid: int, timeout: float = 120.0) -> int:
    """Reap the trainer we started once it exits by itself; its exit code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        await asyncio.sleep(0.2)
    raise AssertionError(f"the trainer (pid {pid}) did not exit {timeout}s after losing a rank")


async def test_a_deepspeed_config_that_fights_the_run_spec_is_refused_before_the_run_starts(stack, tmp_path):
    config = tmp_path / "ds.json"
    config.write_text('{"gradient_clipping": 5.0}')
    yaml = stack.spec_yaml("dsbad").replace("lr: 0.001}", DEEPSPEED.replace("}}", f", config_file: {config}}}}}"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create_run(stack, yaml, run_id("dsbad"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "trainer at" in err.value.details() and "train.grad_clip" in err.value.details()


async def test_a_killed_rank_restarts_the_trainer_and_the_run_trains_every_sample_once(stack, store):
    rid = run_id("dskill")
    # Long enough that the kill lands mid-run even when a loaded machine's poll is late: a rank
    # killed once the run has ended (its ranks closing) rightly fails nothing.
    steps, b, g = 30, 2, 4
    yaml = stack.spec_yaml("dskill", steps=steps, batch_groups=b, group_size=g).replace("lr: 0.001}", DEEPSPEED)
    await create_run(stack, yaml, rid)
    await wait_mid_run(stack, rid, lambda p: p.policy_version >= 2)
    trainer = stack.pid("svc_trainer")
    ranks = rank_pids(trainer)
    assert len(ranks) == 2
    os.kill(ranks[-1], signal.SIGKILL)  # one rank of the trainer we started
    assert await exit_status(trainer) != 0  # it failed visibly, by itself
    stalled = await wait_until(stack, rid, lambda p: True)
    assert stalled.state == svc.RUNNING and stalled.policy_version < steps  # killed mid-run: it waits for a trainer
    await stack.restart("svc_trainer")
    last = await wait_until(stack, rid, finished)
    assert last.state == svc.COMPLETED, last.message
    await assert_every_sample_trained_once(stack, store, rid, steps, b, g)
