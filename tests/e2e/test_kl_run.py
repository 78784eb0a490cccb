"""A run with the KL anchor through the four services: the trainer keeps its reference (the
starting model, built again after a restart), and every version reports the batch's KL."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from jetrl.lineage.models import PolicyVersion
from jetrl.v1 import services_pb2 as svc
from runs import create_run, finished, run_id, wait_mid_run, wait_until

pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize("kl_in", ["loss", "reward"])
async def test_every_version_of_a_kl_anchored_run_reports_its_kl_even_across_a_trainer_restart(stack, store, kl_in):
    rid = run_id("kl")
    steps = 30  # a version takes ~0.1 s: the kill must land mid-run after a late poll
    yaml = stack.spec_yaml("kl", steps=steps).replace("lr: 0.001}", f"lr: 0.001, kl_coef: 0.1, kl_in: {kl_in}}}")
    await create_run(stack, yaml, rid)
    await wait_mid_run(stack, rid, lambda p: p.policy_version >= 2)
    stack.kill("svc_trainer")  # the restarted trainer builds its reference again
    await stack.restart("svc_trainer")
    last = await wait_until(stack, rid, finished)
    assert last.state == svc.COMPLETED, last.message
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(PolicyVersion.version, PolicyVersion.metrics)
                .where(PolicyVersion.run_id == rid)
                .order_by(PolicyVersion.version)
            )
        ).all()
    assert [v for v, _ in rows] == list(range(1, steps + 1))
    kls = [m["kl"] for _, m in rows]
    # k3 is never negative; version 1 is trained from version 0, the reference itself (in the
    # reward, measured on the rollout's behaviour log-probs: the engines' numerics differ slightly)
    assert all(k >= 0 for k in kls) and kls[0] == pytest.approx(0.0, abs=1e-6 if kl_in == "loss" else 1e-3)
    if kl_in == "reward":
        assert all(m["kl_penalty"] >= 0 for _, m in rows)
