"""End to end: label-free rewards over views and the EMA teacher, composed endpoints, and what a run
does when a reward server dies. Reward servers are started here as their own processes, by pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select

from jetrl.lineage.models import PromptGroup, Reward, Sample
from jetrl.localstack import free_port
from jetrl.rpc import wait_serving
from jetrl.rpc_security import LOCAL
from jetrl.v1 import services_pb2 as svc
from runs import create_run, finished, run_id, trainer_count, wait_until

pytestmark = pytest.mark.timeout(600)


@contextmanager
def reward_server(module: str, port: int | None = None):
    """`python -m svc_reward.<module>` on a free port; yields (process, address); ended by its pid."""
    addr = f"127.0.0.1:{port or free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", f"svc_reward.{module}"], env={**os.environ, "JETRL_LISTEN": addr})
    try:
        yield proc, addr
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


async def test_co_reward_and_teacher_train_without_labels_on_both_views(stack, store):
    with reward_server("co_reward") as (_, co), reward_server("teacher") as (_, teacher):
        for addr in (co, teacher):
            await wait_serving(addr, LOCAL, timeout=60, what=addr)
        rid = run_id("label-free")
        steps, b, g, g_teacher = 3, 2, 3, 2
        extra = dict(
            rollout=f"rollout: {{group_size: {g}, max_new_tokens: 5, analogous_view: true}}",
            teacher=f"teacher: {{samples: {g_teacher}}}",
            reward=f"reward: {{endpoints: [{{address: '{co}'}}, {{address: '{teacher}', weight: 0.5}}]}}",
            schedule="schedule: {eval_every: 0, prompt_selection: thompson, prompt_pool: 16}",
        )
        spec = (
            stack.spec_yaml("label-free", steps=steps, batch_groups=b, group_size=g)
            .replace(f"rollout: {{group_size: {g}, max_new_tokens: 5}}\n", "")
            .replace("schedule: {eval_every: 0}\n", "")
        )
        await create_run(stack, spec + "\n".join(extra.values()) + "\n", rid)
        last = await wait_until(stack, rid, finished)
    assert last.state == svc.COMPLETED, last.message
    assert last.teacher_version == steps  # the teacher absorbed every version, on its own stream
    # both trained views of every batched group were trained; the teacher's samples never
    rows = await store.reports.trained_sample_rows(rid)
    assert len(rows) == steps * b * 2 * g == await trainer_count(stack, rid)
    async with store.engine.connect() as conn:
        views = dict(
            (
                await conn.execute(select(Sample.view, func.count()).where(Sample.run_id == rid).group_by(Sample.view))
            ).all()
        )
        trained_teacher = (
            await conn.execute(
                select(func.count()).where(
                    Sample.run_id == rid, Sample.view == "teacher", Sample.trained_version.is_not(None)
                )
            )
        ).scalar_one()
        scorers = set(
            (
                await conn.execute(
                    select(Reward.server).join(Sample, Sample.sample_id == Reward.sample_id).where(Sample.run_id == rid)
                )
            ).scalars()
        )
        problems = set((await conn.execute(select(PromptGroup.problem).where(PromptGroup.run_id == rid))).scalars())
    assert views["main"] == views["analogous"] and views["teacher"] * g == views["main"] * g_teacher
    assert trained_teacher == 0
    assert scorers == {"co_reward@1", "teacher@1"}  # each endpoint's own reward row per sample
    assert problems and all(p is not None and 0 <= p < 16 for p in problems)  # Thompson chose from the pool


@pytest.mark.parametrize("policy", ["zero", "drop"])
async def test_a_killed_reward_server_never_stalls_the_run_and_is_used_again_once_back(stack, store, policy):
    port = free_port()
    rid = run_id(f"reward-down-{policy}")
    # zero: the groups scored while the server is down go on training, and since the stage scores
    # them concurrently the run races ahead; enough versions are left for it to come back, and the
    # failed-share guard (its own test is test_reward_faults) stays out of this one
    share = ", max_failed_share: 1" if policy == "zero" else ""
    reward = f"reward: {{endpoint: '127.0.0.1:{port}', deadline_s: 1, retries: 1, on_failure: {policy}{share}}}"
    steps, batch = (16 if policy == "zero" else 8), 2
    with reward_server("majority", port) as (proc, addr):
        await wait_serving(addr, LOCAL, timeout=60, what="majority")
        await create_run(stack, stack.spec_yaml(f"reward-down-{policy}", steps=steps, reward=reward), rid)
        await wait_until(stack, rid, lambda p: p.policy_version >= 1)
        proc.send_signal(signal.SIGKILL)  # the server this test started, by its pid
        proc.wait()
    # the failure policy applies within the deadline and shows in progress
    down = await wait_until(stack, rid, lambda p: p.reward_failures >= 1, timeout=60)
    assert down.last_reward_error.startswith(f"127.0.0.1:{port}: ")  # progress names the endpoint and why
    if policy == "zero":  # scored with zero rewards: versions go on while the server is down
        await wait_until(stack, rid, lambda p: p.policy_version >= down.policy_version + 1, timeout=120)
    else:  # dropped and replaced: nothing from the dead server is trained
        await wait_until(stack, rid, lambda p: p.groups_dropped >= 1, timeout=60)
    with reward_server("majority", port) as (_, addr):
        await wait_serving(addr, LOCAL, timeout=60, what="majority")
        last = await wait_until(stack, rid, finished)
    assert last.state == svc.COMPLETED, last.message
    async with store.engine.connect() as conn:
        groups = (
            await conn.execute(
                select(PromptGroup.n, PromptGroup.state, PromptGroup.reward_error)
                .where(PromptGroup.run_id == rid)
                .order_by(PromptGroup.n)
            )
        ).all()
    failed = [n for n, _, error in groups if error]
    assert failed and all("127.0.0.1" in error for _, _, error in groups if error)
    trained = [(n, error) for n, state, error in groups if state == "trained"]
    assert len(trained) == steps * batch  # every version trained its full batch either way
    # after the failures, groups were scored by the server again: the run used it once it came back
    assert any(error is None and n > max(failed) for n, error in trained), groups
    dropped = [n for n, state, _ in groups if state == "dropped"]
    assert last.reward_failures >= len(failed)
    if policy == "zero":
        assert not dropped and set(failed) & set(dict(trained))  # kept, with the dead server's share 0
    else:
        assert dropped == failed and last.groups_dropped == len(dropped)
        assert all(error is None for _, error in trained)


async def test_reward_failure_can_fail_the_run_with_the_reason(stack):
    rid = run_id("reward-fail")
    dead = f"127.0.0.1:{free_port()}"
    reward = f"reward: {{endpoint: '{dead}', deadline_s: 1, retries: 0, on_failure: fail}}"
    await create_run(stack, stack.spec_yaml("reward-fail", steps=2, reward=reward), rid)
    last = await wait_until(stack, rid, finished, timeout=120)
    assert last.state == svc.FAILED and dead in last.message and "on_failure: fail" in last.message


async def test_a_reward_server_that_never_comes_back_ends_a_drop_run_at_max_dropped(stack, store):
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    rid = run_id("reward-gone")
    reward = f"reward: {{endpoint: '{dead}', deadline_s: 1, retries: 0, on_failure: drop, max_dropped: 3}}"
    await create_run(stack, stack.spec_yaml("reward-gone", steps=3, reward=reward), rid)
    last = await wait_until(stack, rid, finished, timeout=120)
    assert last.state == svc.FAILED and dead in last.message and "reward.max_dropped: 3" in last.message
    assert last.groups_dropped >= 3 and last.policy_version == 0  # nothing was trained on a dead server's share


async def test_a_run_whose_reward_server_needs_what_it_lacks_is_refused_before_it_starts(stack):
    import grpc

    with reward_server("co_reward") as (_, co):
        await wait_serving(co, LOCAL, timeout=60, what="co_reward")
        reward = f"reward: {{endpoint: '{co}'}}"  # but no analogous view
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create_run(stack, stack.spec_yaml("needs", steps=1, reward=reward), run_id("needs"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "co_reward@1 needs the analogous view: set rollout.analogous_view: true" in err.value.details()
