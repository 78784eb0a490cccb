"""What the end-to-end tests do with runs: submit one, poll it, read the trainer's count, check its lineage."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict

import grpc

from jetrl.rpc import channel
from jetrl.v1 import services_pb2 as svc
from jetrl.v1 import services_pb2_grpc


def run_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def create_run(stack, spec_yaml: str, rid: str = "") -> svc.Run:
    async with channel(stack.settings.scheduler_addr, stack.settings) as ch:
        stub = services_pb2_grpc.SchedulerServiceStub(ch)
        return await stub.CreateRun(svc.CreateRunRequest(spec_yaml=spec_yaml, run_id=rid), timeout=60)


async def wait_until(stack, rid: str, predicate, timeout: float = 400.0) -> svc.RunProgress:
    """Poll GetRun (it survives a scheduler restart, unlike a stream) until predicate(progress)."""
    deadline = time.monotonic() + timeout
    run = None
    while True:
        try:
            async with channel(stack.settings.scheduler_addr, stack.settings) as ch:
                run = await services_pb2_grpc.SchedulerServiceStub(ch).GetRun(svc.GetRunRequest(run_id=rid), timeout=10)
            if predicate(run.progress):
                return run.progress
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
        assert time.monotonic() < deadline, f"run {rid} did not get there in {timeout}s: {run and run.progress}"
        await asyncio.sleep(0.5)


def finished(p: svc.RunProgress) -> bool:
    return p.state != svc.RUNNING


async def wait_mid_run(stack, rid: str, predicate) -> svc.RunProgress:
    """wait_until(predicate) in a run that is still running: a test that then kills something must
    kill it mid-run, or it tests nothing (a late poll on a loaded machine can see a short run end
    first: it fails here, never passes for nothing)."""
    seen = await wait_until(stack, rid, lambda p: predicate(p) or finished(p))
    assert not finished(seen), f"run {rid} ended before the point this test acts at (make it longer): {seen}"
    return seen


async def trainer_count(stack, rid: str) -> int:
    async with channel(stack.settings.trainer_addr, stack.settings) as ch:
        status = await services_pb2_grpc.TrainerServiceStub(ch).GetStatus(
            svc.TrainerStatusRequest(run_id=rid), timeout=10
        )
    return status.samples_trained


async def assert_every_sample_trained_once(stack, store, rid: str, steps: int, b: int, g: int) -> None:
    """Lineage holds exactly steps·B·G trained samples, each complete, in the right version."""
    rows = await store.reports.trained_sample_rows(rid)
    assert len(rows) == steps * b * g == await trainer_count(stack, rid)
    per_version = defaultdict(int)
    for r in rows:
        assert r.reward in (0.0, 1.0) and r.advantage is not None
        assert r.trained_version == r.min_version + 1 == r.max_version + 1  # synchronous: η = 0
        per_version[r.trained_version] += 1
    assert per_version == {v: b * g for v in range(1, steps + 1)}
    stats = await store.reports.run_stats(rid)
    assert stats.samples_generated == steps * b * g  # nothing generated twice


def run_demo(spec, tmp_path, database_url, monkeypatch):
    """`jetrl demo` with `spec` on a stack of its own (not from a coroutine: it runs its own event
    loops); its settings, run id and evaluations, after checking it gained at least 25 points over
    its 50 versions."""
    from jetrl.cli.demo import demo
    from jetrl.cli.stack import isolated_settings
    from jetrl.config import load_spec

    settings = isolated_settings(tmp_path, database_url, torch_threads=1)
    monkeypatch.setenv("JETRL_DATA_DIR", str(settings.data_dir))  # demo() sets it; restored after the test
    assert demo(settings, spec, keep_running=False) == 0
    run_id, evaluations = asyncio.run(demo_evaluations(settings.database_url, load_spec(spec).name))
    (first, *_, last) = evaluations
    assert (first[0], last[0]) == (0, 50) and last[3] - first[3] >= 0.25, evaluations
    return settings, run_id, evaluations


async def demo_evaluations(database_url: str, name: str) -> tuple[str, list[tuple[int, int, int, float]]]:
    """The id of the one run called `name` (a demo's, on a stack of its own) and its evaluations."""
    from jetrl.lineage.db import make_engine
    from jetrl.lineage.store import LineageStore

    engine = make_engine(database_url)
    try:
        store = LineageStore(engine)
        [run] = [r for r in await store.runs.list_runs() if r.name == name]
        return run.run_id, await store.reports.evaluations(run.run_id)
    finally:
        await engine.dispose()
