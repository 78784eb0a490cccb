"""One chaos trial: submit a small run, inject its fault at its moment, follow the run to its end
or to the timeout, then check the invariants.

Every wait is bounded: the run must reach the fault's moment, and then leave RUNNING, within
`run_timeout_s` each; a run still RUNNING then is a stall, reported with its progress and its
stranded groups, and stopped so it does not load the next trials. The scheduler is polled with
GetRun (a stream would not survive its restart); any error while it is down or the database is
out counts as "no answer yet", never as the end.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import grpc
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncEngine

from jetrl.chaos.invariants import check_run, stranded
from jetrl.chaos.plan import ChaosConfig, TrialPlan
from jetrl.chaos.stack import ChaosStack
from jetrl.cli.watch import describe
from jetrl.config import RunSpec, dump_spec
from jetrl.lineage.db import make_engine
from jetrl.rpc import channel
from jetrl.spec_sections import ModelSpec, RolloutSpec, ScheduleSpec, SimulationSpec, TaskSpec, TrainSpec
from jetrl.v1 import services_pb2 as svc
from jetrl.v1 import services_pb2_grpc

__all__ = ["CheckResult", "TrialResult", "trial_spec", "run_trial"]

POLL_S = 0.5
LATE_CHECK_S = 35.0  # past the scheduler consumers' 30 s ack wait (jetrl/bus/topology.py)
HELDOUT = 40  # a small final evaluation: the trial is about the pipeline, not accuracy


class CheckResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    ok: bool
    detail: str


class TrialResult(BaseModel):
    """What one trial did and found; `outcome` is ok, missed (the run ended before the fault's
    moment), stall, failed (the run ended FAILED/STOPPED), violated (it completed, an invariant
    did not hold) or error (the harness could not do its part)."""

    plan: TrialPlan
    run_id: str
    outcome: str
    fault: str = ""  # what was done, with its timings
    fault_at_s: float | None = None  # seconds after submission
    duration_s: float = 0.0
    progress: str = ""  # the last progress seen
    checks: list[CheckResult] = []
    notes: list[str] = []

    @property
    def passed(self) -> bool:
        return self.outcome in ("ok", "missed")


def trial_spec(plan: TrialPlan, config: ChaosConfig, stack: ChaosStack) -> RunSpec:
    """A small run of the plan's kind on the tiny model. Synchronous and async runs have B = 8
    groups of G = 8 (a version every ~0.3 s on two cores, 64 samples in flight to lose). APRIL
    runs on the simulated engines, as tests/e2e/test_run.py's APRIL test does: the tiny model
    finishes a group before an abort could reach it, so only paced generation leaves partial
    samples to recycle; there B = 2 groups of G = 4 already take ~1 s a version."""
    april = plan.spec == "april"
    return RunSpec(
        name=f"chaos{plan.index}-{plan.spec}",
        seed=plan.seed,
        model=ModelSpec(path=str(stack.model_dir)),
        task=TaskSpec(heldout_size=HELDOUT),
        rollout=RolloutSpec(group_size=4 if april else 8, max_new_tokens=40 if april else 5),
        train=TrainSpec(steps=config.steps, batch_groups=2 if april else 8, lr=2e-4),
        schedule=ScheduleSpec(max_staleness=plan.max_staleness, over_provision=2.0 if april else 1.0, eval_every=0),
        simulation=SimulationSpec(
            decode_step_s=0.02,
            length_median=10,
            length_sigma=0.8,
            max_length=40,
            train_s_per_token=0.0,
            train_s_per_step=0.2,
        )
        if april
        else None,
    )


def _moved(p: svc.RunProgress) -> tuple:
    """The numbers that change whenever a run makes any progress."""
    return p.state, p.policy_version, p.samples_generated, p.samples_trained, p.partial_groups


class _Follower:
    """Polls GetRun; remembers the last progress and when it last changed."""

    def __init__(self, stack: ChaosStack, run_id: str):
        self.settings, self.run_id = stack.settings, run_id
        self.last: svc.RunProgress | None = None
        self.changed_at = time.monotonic()
        self.error = ""

    async def poll(self) -> svc.RunProgress | None:
        try:
            async with channel(self.settings.scheduler_addr, self.settings) as ch:
                run = await services_pb2_grpc.SchedulerServiceStub(ch).GetRun(
                    svc.GetRunRequest(run_id=self.run_id), timeout=10
                )
        except grpc.aio.AioRpcError as exc:
            self.error = f"GetRun: {exc.code().name} {exc.details()}"
            return None
        p = run.progress
        if self.last is None or _moved(p) != _moved(self.last):
            self.changed_at = time.monotonic()
        self.last = p
        return p

    async def until(self, predicate: Callable[[svc.RunProgress], bool], timeout: float) -> bool:
        """Poll until predicate(progress) or the run has ended; False when the timeout came first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = await self.poll()
            if p is not None and (p.state != svc.RUNNING or predicate(p)):
                return True
            await asyncio.sleep(POLL_S)
        return False


async def _inject(stack: ChaosStack, plan: TrialPlan) -> str:
    """Do the plan's fault; returns what was done. Kills come back after the planned delay."""
    if plan.fault.startswith("kill-"):
        module = f"svc_{plan.fault.removeprefix('kill-')}"
        stack.kill(module)
        await asyncio.sleep(plan.restart_delay_s)
        began = time.monotonic()
        await stack.restart(module)
        return (
            f"SIGKILL {module}, restarted after {plan.restart_delay_s:.1f}s, "
            f"serving {time.monotonic() - began:.1f}s later"
        )
    if plan.fault == "nats":
        stack.kill("nats-server")
        await asyncio.sleep(plan.restart_delay_s)
        stack.restart_broker()
        return f"SIGKILL nats-server, restarted with its store after {plan.restart_delay_s:.1f}s"
    if plan.fault == "db":
        took = await stack.outage(plan.restart_delay_s)
        return f"Postgres stopped (immediate), up again after {took:.1f}s"
    if not stack.end_extra_worker():
        raise RuntimeError("the second rollout worker was already gone at the fault's moment")
    return "SIGKILL the second rollout worker, not restarted"


async def _trainer_count(stack: ChaosStack, run_id: str) -> tuple[int | None, str]:
    try:
        async with channel(stack.settings.trainer_addr, stack.settings) as ch:
            status = await services_pb2_grpc.TrainerServiceStub(ch).GetStatus(
                svc.TrainerStatusRequest(run_id=run_id), timeout=10
            )
        return status.samples_trained, ""
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return 0, ""  # it never trained this run
        return None, f"{exc.code().name} {exc.details()}"


async def _stop(stack: ChaosStack, run_id: str) -> str:
    try:
        async with channel(stack.settings.scheduler_addr, stack.settings) as ch:
            await services_pb2_grpc.SchedulerServiceStub(ch).StopRun(
                svc.StopRunRequest(run_id=run_id, reason="chaos: stalled"), timeout=30
            )
        return "the stalled run was stopped"
    except grpc.aio.AioRpcError as exc:
        return f"the stalled run could not be stopped: {exc.code().name} {exc.details()}"


async def _late(stack: ChaosStack, engine: AsyncEngine, run_id: str, spec: RunSpec) -> str:
    """Look again once every unacked event has come back (the longest ack wait, 30 s): tells a
    run that was declared over before its lineage was complete from one that lost something."""
    await asyncio.sleep(LATE_CHECK_S)
    trainer, trainer_error = await _trainer_count(stack, run_id)
    again = await check_run(engine, run_id, spec, trainer, trainer_error)
    still = [c.name for c in again if not c.ok]
    return f"{LATE_CHECK_S:.0f}s later " + (
        f"still failing: {', '.join(still)}" if still else "every check holds: lineage caught up after the run ended"
    )


async def run_trial(stack: ChaosStack, config: ChaosConfig, plan: TrialPlan) -> TrialResult:
    spec = trial_spec(plan, config, stack)
    run_id = f"{spec.name}-{uuid.uuid4().hex[:6]}"
    result = TrialResult(plan=plan, run_id=run_id, outcome="error")
    began = time.monotonic()
    try:
        await _run(stack, config, plan, spec, result, began)
    except Exception as exc:  # the harness's own failure is a trial outcome, never a crash of the suite
        result.outcome, result.notes = "error", [*result.notes, f"{type(exc).__name__}: {exc}"]
    crashed: list[str] = []
    try:
        stack.end_extra_worker()  # whatever happened, the next trial starts with one worker
        crashed = await stack.revive()
    except Exception as exc:
        result.outcome, result.notes = "error", [*result.notes, f"stack not restored: {type(exc).__name__}: {exc}"]
    # a service must ride out every fault in its process (issue 10: "keeps its process")
    result.checks.append(
        CheckResult(
            name="no crash", ok=not crashed, detail="; ".join(crashed) or "no process exited without being killed"
        )
    )
    if crashed and result.outcome in ("ok", "missed"):
        result.outcome = "violated"
    if result.outcome == "stall":  # after revive: a scheduler that died could not have stopped it
        result.notes.append(await _stop(stack, result.run_id))
    result.duration_s = round(time.monotonic() - began, 1)
    return result


async def _run(
    stack: ChaosStack, config: ChaosConfig, plan: TrialPlan, spec: RunSpec, result: TrialResult, began: float
) -> None:
    await stack.wait_whole()  # a service restarted after the last trial may still be loading
    if plan.fault == "worker":
        await stack.start_extra_worker()
    async with channel(stack.settings.scheduler_addr, stack.settings) as ch:
        await services_pb2_grpc.SchedulerServiceStub(ch).CreateRun(
            svc.CreateRunRequest(spec_yaml=dump_spec(spec), run_id=result.run_id), timeout=60
        )
    follow = _Follower(stack, result.run_id)
    reached = await follow.until(lambda p: p.policy_version >= plan.at_version, config.run_timeout_s)
    if reached:
        await asyncio.sleep(plan.after_s)
        reached = await follow.poll() is not None
    if reached and follow.last is not None and follow.last.state == svc.RUNNING:  # reached: last is set
        result.fault_at_s = round(time.monotonic() - began, 1)
        result.fault = await _inject(stack, plan)
        done = await follow.until(lambda p: False, config.run_timeout_s)
    else:
        result.fault = "not injected: " + ("the run ended first" if reached else "the moment never came")
        done = reached
    p = follow.last
    result.progress = f"v{p.policy_version}/{p.total_steps} {describe(p)}" if p else follow.error
    engine = make_engine(stack.settings.database_url)
    try:
        if not done:
            stuck = await stranded(engine, result.run_id, spec)
            result.notes.append(
                f"stall: still RUNNING at the timeout ({config.run_timeout_s:.0f}s), the last progress "
                f"{time.monotonic() - follow.changed_at:.0f}s ago; {len(stuck)} stranded groups"
            )
        trainer, trainer_error = await _trainer_count(stack, result.run_id)
        checks = await check_run(engine, result.run_id, spec, trainer, trainer_error)
        if done and not all(c.ok for c in checks):
            result.notes.append(await _late(stack, engine, result.run_id, spec))
    finally:
        await engine.dispose()
    result.checks = [CheckResult(name=c.name, ok=c.ok, detail=c.detail) for c in checks]
    if not done:
        result.outcome = "stall"
    elif p is not None and p.state in (svc.FAILED, svc.STOPPED):
        result.outcome = "failed"
    elif result.fault.startswith("not injected"):
        result.outcome = "missed" if all(c.ok for c in checks) else "violated"
    else:
        result.outcome = "ok" if all(c.ok for c in checks) else "violated"
