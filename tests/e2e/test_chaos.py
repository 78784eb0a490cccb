"""The chaos suite: its short version, and `jetrl chaos`'s default session as a `slow` test
(`jetrl chaos` runs the long one; docs/reliability.md).

Four trials on the suite's own private stack (its own Postgres cluster, nats-server and the four
services, as `jetrl up` starts them): a service killed mid-run in each kind of spec, and the
broker killed and restarted with its store. Each run must complete with every invariant read
back from lineage: every admitted group accounted for, nothing trained twice, the trainer's
count equal to lineage's, no service exiting by itself. The trials are fixed, not drawn, so a
failure names the same trial every time. The slow test runs the twelve trials `jetrl chaos` draws
with its defaults (seed 0: a random service killed in each, the three spec kinds shared evenly):
minutes, not seconds (most trials take 15-45 s on two cores, docs/reliability.md).
"""

from __future__ import annotations

import pytest

from jetrl.chaos.plan import ChaosConfig, TrialPlan, make_plan
from jetrl.chaos.report import progress_line
from jetrl.chaos.runner import run_trials

pytestmark = pytest.mark.timeout(600)

# 16 versions: about 5 s of work per run on two cores before the fault's cost; a stall shows
# within the timeout instead of hanging the suite
CONFIG = ChaosConfig(trials=4, steps=16, run_timeout_s=150)
PLANS = [
    TrialPlan(
        index=i, seed=i, spec=spec, max_staleness=eta, fault=fault, at_version=at, after_s=after, restart_delay_s=down
    )
    for i, (spec, eta, fault, at, after, down) in enumerate(
        [
            # the trainer dies holding a batch: it comes back after the ack wait, trained once
            ("sync", 0, "kill-trainer", 4, 0.3, 2.0),
            # the scheduler dies with groups and batches in flight ahead of the trainer
            ("async", 2, "kill-scheduler", 3, 0.2, 1.0),
            # the rollout worker dies while over-provisioned groups generate and partials wait
            ("april", 1, "kill-rollout", 5, 0.5, 3.0),
            # the broker dies; it comes back on its port with its JetStream store
            ("sync", 0, "nats", 5, 0.2, 2.0),
        ]
    )
]


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """Where the services' logs are kept after the stack is gone (pytest keeps its last 3 runs)."""
    return tmp_path_factory.mktemp("chaos-logs")


@pytest.fixture(scope="module")
def chaos(tiny_model, logs):
    from jetrl.chaos.stack import chaos_stack

    with chaos_stack(tiny_model, logs_to=logs) as stack:
        yield stack


async def test_every_fault_leaves_every_invariant(chaos, logs):
    results = await run_trials(chaos, CONFIG, PLANS, lambda r: print(progress_line(r, len(PLANS), markup=False)))
    # "ok": the fault landed mid-run (not after the end) and the run completed with every check
    failed = [progress_line(r, len(PLANS), markup=False) for r in results if r.outcome != "ok"]
    assert not failed, "\n".join(failed) + f"\nthe services' logs: {logs}"
    assert all(len(r.checks) == 5 and all(c.ok for c in r.checks) for r in results)


@pytest.mark.slow
@pytest.mark.timeout(3600)
async def test_a_dozen_random_kills_leave_every_invariant(chaos, logs):
    config = ChaosConfig()  # `jetrl chaos` with no options: 12 trials of seed 0's plan
    plans = make_plan(config)
    results = await run_trials(chaos, config, plans, lambda r: print(progress_line(r, len(plans), markup=False)))
    # as `jetrl chaos` judges: ok, or missed (the run ended before the fault's moment)
    failed = [progress_line(r, len(plans), markup=False) for r in results if not r.passed]
    assert not failed, "\n".join(failed) + f"\nthe services' logs: {logs}"
