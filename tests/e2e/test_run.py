"""End to end: the four services over real NATS and Postgres train the tiny policy.

Each test submits its own run to the module's stack (tests/e2e/conftest.py).
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import time

import grpc
import pytest

from jetrl.rpc import channel
from jetrl.v1 import services_pb2 as svc
from jetrl.v1 import services_pb2_grpc
from runs import (
    assert_every_sample_trained_once,
    create_run,
    finished,
    run_id,
    trainer_count,
    wait_mid_run,
    wait_until,
)

pytestmark = pytest.mark.timeout(600)


async def test_a_short_run_trains_and_records_every_sample(stack, store):
    rid = run_id("short")
    created = await create_run(stack, stack.spec_yaml("short", steps=3), rid)
    assert created.run_id == rid
    # WatchRun streams progress until the run ends
    seen = []
    async with channel(stack.settings.scheduler_addr, stack.settings) as ch:
        async for progress in services_pb2_grpc.SchedulerServiceStub(ch).WatchRun(svc.WatchRunRequest(run_id=rid)):
            seen.append(progress)
    last = seen[-1]
    assert last.state == svc.COMPLETED, last.message
    assert last.policy_version == 3 and last.samples_trained == 24 and last.heldout_version == 3
    # every token is fresh (synchronous) and rollout and trainer are the same torch code: no gap
    assert 0 <= last.logprob_gap_mean <= last.logprob_gap_max < 1e-4
    assert [p.policy_version for p in seen] == sorted(p.policy_version for p in seen)
    # collapse in sight: the newest version's entropy and answer share, and no warning on arithmetic
    assert 0 < last.entropy and 0 < last.top_answer_share <= 1 and last.collapse_warning == ""
    assert math.isnan(last.kl)  # no reference: no KL
    await assert_every_sample_trained_once(stack, store, rid, steps=3, b=2, g=4)
    evaluations = await store.reports.evaluations(rid)
    assert [e[0] for e in evaluations] == [0, 3] and all(e[2] == 40 for e in evaluations)
    groups = await store.groups.group_counts(rid)
    assert groups["trained"] == 6 and sum(groups.values()) == 6  # synchronous: nothing admitted past the end


@pytest.mark.parametrize(
    "spec_yaml, needle",
    [
        ("model: {path: /m}\nrollout: {group_size: 0}\n", "rollout.group_size"),
        ("model: {path: /m}\ntrain: {lr: -1}\n", "train.lr"),
        ("name: x\n", "model: Field required"),
        ("model: {path: /nonexistent/model}\n", "model.path"),
        ("model: [\n", "not valid YAML"),
    ],
)
async def test_an_invalid_run_is_refused_with_what_is_wrong(stack, spec_yaml, needle):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create_run(stack, spec_yaml)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.value.details()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="the stack's rollout workers have vLLM")
async def test_a_vllm_run_on_workers_without_vllm_is_refused_with_how_to_install_it(stack):
    yaml = stack.spec_yaml("novllm").replace("rollout: {", "rollout: {engine: vllm, ")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create_run(stack, yaml)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "can build only torch" in err.value.details() and "scripts/setup_vllm.sh" in err.value.details()


async def test_killed_trainer_and_rollout_worker_lose_nothing(stack, store):
    # long enough that the rollout kill still lands mid-run after the trainer's restart: the
    # restarted trainer trains ~0.1 s a version, before its restart is even seen as SERVING
    steps, b, g = 60, 2, 4
    rid = run_id("crash")
    await create_run(stack, stack.spec_yaml("crash", steps=steps, batch_groups=b, group_size=g), rid)
    # the trainer dies while it holds a sealed batch: synchronous admission leaves no group
    # running between the seal of batch v and the announcement of version v + 1
    at = await wait_mid_run(stack, rid, lambda p: p.policy_version >= 1 and p.groups_running == 0)
    stack.kill("svc_trainer")
    await stack.restart("svc_trainer")
    # a rollout worker dies while tasks of a step after the restart are in flight
    await wait_mid_run(stack, rid, lambda p: p.policy_version > at.policy_version and p.groups_running > 0)
    stack.kill("svc_rollout")
    await stack.restart("svc_rollout")
    last = await wait_until(stack, rid, finished)
    assert last.state == svc.COMPLETED, last.message
    await assert_every_sample_trained_once(stack, store, rid, steps, b, g)


async def test_malformed_events_are_dead_lettered_and_the_run_goes_on(stack, store):
    from jetrl.bus import Kind, connect

    rid = run_id("dlq")
    await create_run(stack, stack.spec_yaml("dlq", steps=2), rid)
    nc = await connect(stack.settings, "test-malformed")
    try:
        js = nc.jetstream()
        for kind in Kind:
            await js.publish(f"jetrl.{rid}.{kind}", b"\x08\xff\xff not protobuf")
    finally:
        await nc.close()
    last = await wait_until(stack, rid, finished)
    assert last.state == svc.COMPLETED, last.message
    deadline = time.monotonic() + 30
    while len(letters := await store.reports.dead_letters(rid)) < len(Kind):
        assert time.monotonic() < deadline, [d.subject for d in letters]
        await asyncio.sleep(0.5)
    assert sorted(d.subject for d in letters) == sorted(f"jetrl.{rid}.{k}" for k in Kind)
    assert all(d.reason and d.payload == b"\x08\xff\xff not protobuf" for d in letters)
    assert (await wait_until(stack, rid, lambda p: p.dead_letters == len(Kind))).dead_letters == len(Kind)


async def test_one_group_is_one_trace_and_batches_link_to_them(stack, store):
    rid = run_id("trace")
    await create_run(stack, stack.spec_yaml("trace", steps=1), rid)
    last = await wait_until(stack, rid, finished)
    assert last.state == svc.COMPLETED
    async with store.engine.connect() as conn:
        from sqlalchemy import select

        from jetrl.lineage.models import PromptGroup, Sample

        group_trace = (
            (await conn.execute(select(PromptGroup.trace_id).where(PromptGroup.run_id == rid))).scalars().first()
        )
        sample_traces = set((await conn.execute(select(Sample.trace_id).where(Sample.run_id == rid))).scalars())
    assert group_trace and group_trace in sample_traces

    def group_spans():
        return [s for s in stack.receiver.spans if s.trace_id == group_trace]

    def seals():
        return [s for s in stack.receiver.spans if s.name == "batch seal" and s.attributes.get("jetrl.run_id") == rid]

    # the built-in reward server is called in the reward process (svc_reward.stage): its span is
    # in the group's trace, under the reward stage's CONSUMER span
    wanted = {
        ("svc_scheduler", "PRODUCER", None),
        ("svc_rollout", "CONSUMER", None),
        ("svc_reward", "INTERNAL", "RewardService/Score in process"),
    }

    def seen():
        return {(s.service_name, s.kind, s.name) for s in group_spans()} | {
            (s.service_name, s.kind, None) for s in group_spans()
        }

    # spans leave each process in export batches of their own, a child's before its parent's (it
    # ends first): wait for the very spans asserted, not only for a span of each service
    deadline = time.monotonic() + 60
    while not wanted <= seen() or not seals():
        assert time.monotonic() < deadline, (seen(), len(seals()))
        await asyncio.sleep(0.5)
    spans = group_spans()
    assert [s for s in spans if s.name == "group admit" and not s.parent_span_id]  # one root
    assert group_trace in {t for t, _ in seals()[0].links}


async def test_async_april_run_survives_a_scheduler_restart_with_partials(stack, store):
    """Synchronous + APRIL (η = 0, ρ = 4): each batch's spare groups are aborted and resumed next
    version; the scheduler dies while some wait in the buffer. Nothing handed back is lost, no
    sample is trained twice, and no trained token is staler than η (resumed prefixes are masked).

    The simulated-hardware engines pace generation (the tiny model would finish every group
    before any abort could reach it); the services, bus and lineage are the real ones."""
    steps, b, g = 12, 2, 4
    rid = run_id("april")
    extra = dict(
        schedule="schedule: {eval_every: 0, max_staleness: 0, over_provision: 4.0}",
        rollout=f"rollout: {{group_size: {g}, max_new_tokens: 40}}",
        simulation="simulation: {decode_step_s: 0.02, length_median: 10, length_sigma: 0.8, max_length: 40, "
        "train_s_per_token: 0.0, train_s_per_step: 0.2}",
    )
    await create_run(stack, stack.spec_yaml("april", steps=steps, batch_groups=b, group_size=g, **extra), rid)
    await wait_mid_run(stack, rid, lambda p: p.partial_groups > 0 and p.policy_version >= 1 or p.policy_version >= 3)
    stack.kill("svc_scheduler")
    await stack.restart("svc_scheduler")
    last = await wait_until(stack, rid, finished)
    assert last.state == svc.COMPLETED, last.message
    rows = await store.reports.trained_sample_rows(rid)
    assert len(rows) == steps * b * g == await trainer_count(stack, rid)
    assert len({r.sample_id for r in rows}) == len(rows)
    assert all(r.staleness == 0 and r.trained_tokens + r.stale_masked_tokens > 0 for r in rows)
    assert last.max_staleness == 0
    async with store.engine.connect() as conn:
        from sqlalchemy import func, select

        from jetrl.lineage.models import PromptGroup, SampleSegment

        recycled = (
            await conn.execute(select(func.sum(PromptGroup.recycled)).where(PromptGroup.run_id == rid))
        ).scalar()
        multi = (
            (
                await conn.execute(
                    select(SampleSegment.sample_id)
                    .where(SampleSegment.run_id == rid)
                    .group_by(SampleSegment.sample_id)
                    .having(func.count() > 1)
                )
            )
            .scalars()
            .all()
        )
    assert recycled > 0  # over-provisioned groups were aborted and resumed
    trained = {r.sample_id for r in rows}
    for sample_id in multi:
        if sample_id not in trained:
            continue
        segments = await store.reports.segments(sample_id)
        kept = [s for s in segments if s.finish_reason != "dropped"]
        # token-in: each resumed stretch starts where the last one handed back stopped
        assert all(a.end == b.start for a, b in zip(kept, kept[1:])), segments


async def test_a_run_trains_on_a_third_party_reward_server(stack, store):
    """examples/reward_server.py, written only against the generated stubs, runs as its own process
    and is named in the run spec; lineage records it as the scorer of every sample."""
    import signal
    import subprocess
    import sys

    from jetrl.cli.main import REPO
    from jetrl.localstack import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, str(REPO / "examples" / "reward_server.py"), "--port", str(port)])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            await asyncio.wait_for(ch.channel_ready(), 30)
        rid = run_id("third-party")
        reward = f"reward: {{endpoint: '127.0.0.1:{port}', deadline_s: 10}}"
        await create_run(stack, stack.spec_yaml("third-party", steps=2, reward=reward), rid)
        last = await wait_until(stack, rid, finished)
        assert last.state == svc.COMPLETED, last.message
    finally:
        server.send_signal(signal.SIGTERM)  # the process this test started, by its pid
        server.wait(timeout=30)
    rows = await store.reports.trained_sample_rows(rid)
    assert len(rows) == 2 * 2 * 4 == await trainer_count(stack, rid)
    async with store.engine.connect() as conn:
        from sqlalchemy import select

        from jetrl.lineage.models import Reward, Sample

        scorers = set(
            (
                await conn.execute(
                    select(Reward.server, Reward.endpoint)
                    .join(Sample, Sample.sample_id == Reward.sample_id)
                    .where(Sample.run_id == rid)
                )
            ).all()
        )
    assert scorers == {("exact-text@1", f"127.0.0.1:{port}")}


async def test_evaluation_is_served_by_whichever_rollout_worker_is_alive(stack, store):
    """A second worker joins; the first (the one at JETRL_ROLLOUT_ADDR) dies for good mid-run: the
    run's last held-out evaluation is still made, by the worker that is left."""
    from jetrl.cli.stack import start_service
    from jetrl.localstack import free_port
    from jetrl.rpc import wait_serving

    second_addr = f"127.0.0.1:{free_port()}"
    second = start_service(stack.settings, "svc_rollout", listen=second_addr, name="svc_rollout-second")
    try:
        await wait_serving(second_addr, stack.settings, timeout=90, what="second rollout worker")
        rid = run_id("failover")
        steps = 30  # a version takes ~0.1 s: the kill must land mid-run after a late poll
        await create_run(stack, stack.spec_yaml("failover", steps=steps), rid)
        await wait_mid_run(stack, rid, lambda p: p.policy_version >= 1)
        stack.kill("svc_rollout")
        last = await wait_until(stack, rid, finished)
        assert last.state == svc.COMPLETED, last.message
        assert last.heldout_version == steps and not last.message
    finally:
        second.kill()  # the process this test started, by its pid
        second.wait(timeout=30)
        await stack.restart("svc_rollout")
    rows = await store.reports.trained_sample_rows(rid)
    assert len(rows) == steps * 2 * 4 == len({r.sample_id for r in rows})


async def test_the_services_run_as_their_nats_roles(stack):
    """`jetrl up` starts each service as its role's NATS user, and its broker holds them to it:
    the rollout worker's user cannot announce weights (the short run above completed under it)."""
    from pathlib import Path

    from jetrl.bus import Kind, connect, subject
    from jetrl.bus.credentials import as_user
    from jetrl.bus.permissions import SERVICE_ROLES
    from jetrl.bus.refusals import PermissionDenied
    from jetrl.cli.nats_config import stack_passwords

    for module, role in SERVICE_ROLES.items():
        environ = Path(f"/proc/{stack.pid(module)}/environ").read_bytes().split(b"\0")
        assert f"JETRL_NATS_USER={role}".encode() in environ, module
    passwords = stack_passwords(stack.settings)
    assert passwords is not None
    nc = await connect(as_user(stack.settings, "rollout", passwords), "test-forger")
    try:
        with pytest.raises(PermissionDenied, match="publish to 'jetrl.forged.weights'"):
            await nc.jetstream().publish(subject("forged", Kind.WEIGHTS), b"x")
    finally:
        await nc.close()


async def test_the_forged_events_of_the_trust_issue_are_refused_by_the_broker(stack, store):
    """Issue 14's cases, replayed on a stack started as `jetrl up` starts it: an outsider cannot
    connect; a rollout worker's or the reward stage's user cannot publish any of the events that
    ended, stalled or poisoned a run (a last version, a teacher version, the next batch, garbage
    under the next batch's id, COMPLETED, STOP and ABORT controls, tasks); the run completes."""
    from jetrl.bus import BusUnreachable, Kind, connect, subject
    from jetrl.bus.credentials import as_user
    from jetrl.bus.publish import MSG_ID
    from jetrl.bus.refusals import PermissionDenied
    from jetrl.cli.nats_config import stack_passwords
    from jetrl.ids import batch_id
    from jetrl.v1 import events_pb2 as ev

    steps = 3
    rid = run_id("forged")
    await create_run(stack, stack.spec_yaml("forged", steps=steps), rid)
    anonymous = stack.settings.model_copy(update={"nats_user": None, "nats_password": None})
    with pytest.raises(BusUnreachable):
        await connect(anonymous, "test-outsider", timeout=3)
    forged = [
        (Kind.WEIGHTS, ev.WeightsAnnouncement(run_id=rid, version=steps, parent_version=steps - 1)),
        (Kind.TEACHER, ev.WeightsAnnouncement(run_id=rid, version=1)),
        (Kind.BATCHES, ev.Batch(run_id=rid, batch_id=batch_id(rid, 1), step=1, policy_version=1)),
        (Kind.TASKS, ev.Task(run_id=rid, group_id=f"{rid}.g000009", num_samples=1)),
        *((Kind.CONTROL, ev.Control(run_id=rid, kind=k)) for k in (ev.Control.COMPLETED, ev.Control.STOP)),
        (Kind.CONTROL, ev.Control(run_id=rid, kind=ev.Control.ABORT, aborted=[ev.TaskRef(group_id=f"{rid}.g000000")])),
    ]
    passwords = stack_passwords(stack.settings)
    assert passwords is not None
    for role in ("rollout", "reward"):
        nc = await connect(as_user(stack.settings, role, passwords), f"test-forger-{role}")
        try:
            js = nc.jetstream()
            for kind, event in forged:
                with pytest.raises(PermissionDenied):
                    await js.publish(subject(rid, kind), event.SerializeToString())
            with pytest.raises(PermissionDenied):  # garbage under the id the next batch will use
                await js.publish(subject(rid, Kind.BATCHES), b"\xff", headers={MSG_ID: batch_id(rid, 1)})
        finally:
            await nc.close()
    last = await wait_until(stack, rid, finished)
    assert last.state == svc.COMPLETED and last.policy_version == steps and last.dead_letters == 0, last
    await assert_every_sample_trained_once(stack, store, rid, steps, 2, 4)


async def test_a_sample_whose_text_is_not_its_tokens_fails_the_run_with_the_reason(stack, store):
    """A rollout worker's user may publish rollouts: a forged one under a real task attempt's id
    (text "76" on the tokens of "77") used to win the race with the worker's own and be trained.
    The scheduler refuses it, and since it took the id of a rollout the run needs, fails the run
    with the reason instead of leaving it waiting for that rollout."""
    from jetrl.bus import Kind, connect, publish
    from jetrl.bus.credentials import as_user
    from jetrl.cli.nats_config import stack_passwords
    from jetrl.ids import group_id, rollout_msg_id, sample_id
    from jetrl.policy.prompts import PromptTokenizer
    from jetrl.v1 import events_pb2 as ev

    rid = run_id("forgedtext")
    tokens = PromptTokenizer.load(stack.model_dir).backend.encode("77", add_special_tokens=False).ids
    passwords = stack_passwords(stack.settings)
    assert passwords is not None
    stack.stop("svc_rollout")  # the forger is first: the worker's own samples come only after
    try:
        await create_run(stack, stack.spec_yaml("forgedtext", steps=2), rid)
        first = sample_id(group_id(rid, 0), 0)
        forged = ev.Sample(
            run_id=rid,
            group_id=group_id(rid, 0),
            sample_id=first,
            index=0,
            prompt_token_ids=tokens,
            completion_token_ids=tokens,
            logprobs=[-0.1] * len(tokens),
            token_versions=[0] * len(tokens),
            text="76",
            finish_reason="eos",
            worker_id="forger",
        )
        nc = await connect(as_user(stack.settings, "rollout", passwords), "test-forger")
        try:
            rollout = ev.Rollout(run_id=rid, group_id=group_id(rid, 0), samples=[forged])
            await publish(nc.jetstream(), rid, Kind.ROLLOUTS, rollout, msg_id=rollout_msg_id(group_id(rid, 0), 0))
        finally:
            await nc.close()
        last = await wait_until(stack, rid, finished, timeout=120)
    finally:
        await stack.restart("svc_rollout")
    assert last.state == svc.FAILED, last
    assert "not what its tokens decode to" in last.message and first in last.message
    assert all(s.text != "76" for s in (await store.samples.load_group(group_id(rid, 0))).samples)


async def test_runs_watch_stop_report_and_explain_from_the_cli(stack, store, tmp_path, capsys, monkeypatch):
    """Issue 15's run management on the live stack, through the commands' own entry points: `watch`
    re-attaches to a run until it completes, `stop` stops another, `runs` lists both, `report`
    writes the page of the first, `explain` tells one of its trained samples."""
    from jetrl.cli import explain, manage, report

    for console in (manage.out, manage.console, explain.out):  # captured output is no terminal: rich folds at 80
        monkeypatch.setattr(console, "width", 200)
    settings = stack.settings
    rid, other = run_id("cli"), run_id("clistop")
    await create_run(stack, stack.spec_yaml("cli", steps=2), rid)
    assert await manage.follow(settings, rid) == 0
    assert f"run {rid} COMPLETED" in capsys.readouterr().err

    await create_run(stack, stack.spec_yaml("clistop", steps=50), other)
    assert await manage.stop_run(settings, other, "enough for today") == 0
    assert f"run {other} STOPPED: enough for today" in capsys.readouterr().out
    assert await manage.stop_run(settings, other, "") == 1
    assert "only a RUNNING run can be stopped" in capsys.readouterr().err
    assert await manage.follow(settings, other) == 1  # ended, not completed: non-zero
    assert f"run {other} STOPPED" in capsys.readouterr().err
    assert await manage.follow(settings, "no-such-run") == 2
    assert "no run no-such-run; `jetrl runs` lists them" in capsys.readouterr().err

    assert await manage.list_runs(settings) == 0
    table = capsys.readouterr().out
    assert all(any(rid_ in line and state in line for line in table.splitlines()) for rid_, state in
               [(rid, "COMPLETED"), (other, "STOPPED")]), table  # fmt: skip

    page = tmp_path / "report.html"
    assert await report.main(settings, rid, page) == 0
    html = page.read_text()
    for chart in ("held-out accuracy", "mean reward", "staleness (versions)", "trainer: loss", "trainer: lr"):
        assert f'data-title="{chart}"' in html, chart
    assert f"jetrl run {rid}" in html and "name: cli" in html and "16 trained / 16 generated" in html
    assert await report.main(settings, "no-such-run", page) == 1
    assert "no run 'no-such-run' in lineage; `jetrl runs` lists them" in capsys.readouterr().err

    trained = (await store.reports.trained_sample_rows(rid))[0]
    assert await explain.main(settings, trained.sample_id) == 0
    told = capsys.readouterr().out
    story = await store.reports.sample_story(trained.sample_id)
    assert f"sample {trained.sample_id}" in told and f"into version {trained.trained_version}" in told
    assert story.trace_id and f"trace: {settings.jaeger_url}/trace/{story.trace_id}" in told
    assert await explain.main(settings, f"{rid}.g999999.0") == 1


async def test_each_service_answers_a_scrape_and_a_run_writes_tensorboard_curves(stack, store):
    """Issue 15's metrics on the live stack: every service `jetrl up` started serves /metrics where
    it says (each its own port), answers a Prometheus scrape with what it counts, and a run's
    versions reach TensorBoard event files that TensorBoard's own reader loads, one point per
    version for every metric."""
    import urllib.request

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from jetrl.cli.stack import metrics_url

    expected = {
        "svc_scheduler": ["jetrl_events_handled_total", "jetrl_versions_recorded_total"],
        "svc_rollout": ["jetrl_events_handled_total", "jetrl_tokens_generated_total"],
        "svc_reward": ["jetrl_events_handled_total", "jetrl_reward_call_seconds_bucket"],
        "svc_trainer": ["jetrl_events_handled_total"],
    }
    steps = 2
    rid = run_id("metrics")
    await create_run(stack, stack.spec_yaml("metrics", steps=steps), rid)
    assert (await wait_until(stack, rid, finished)).state == svc.COMPLETED
    for module, names in expected.items():
        with urllib.request.urlopen(metrics_url(stack.settings, module), timeout=10) as reply:
            scraped = reply.read().decode()
        assert f'service_name="{module}"' in scraped, (module, scraped[:2000])  # that service's, no other's
        assert all(f"\n{name}{{" in scraped for name in names), (module, scraped[:2000])
    events = stack.settings.data_dir / "tensorboard" / rid
    curves = EventAccumulator(str(events))
    curves.Reload()
    scalars = curves.Tags()["scalars"]
    assert {"train/loss", "train/entropy", "reward/mean", "answers/top_share"} <= set(scalars), scalars
    for tag in scalars:
        if tag.startswith("eval/"):  # evaluations come at the versions evaluated only
            continue
        first = 2 if tag == "throughput/samples_per_s" else 1  # a rate since the version before
        assert [e.step for e in curves.Scalars(tag)] == list(range(first, steps + 1)), tag


async def test_a_stack_beside_this_one_gets_metrics_ports_of_its_own(stack, tmp_path, database_url):
    """Two stacks side by side (isolated_settings) never share a metrics port, nor take the default
    ones of jetrl/ports.py that `jetrl up` gives a stack on the default addresses."""
    from jetrl import ports
    from jetrl.cli.stack import SERVICES, isolated_settings, metrics_ports

    ours = metrics_ports(stack.settings)
    beside = metrics_ports(isolated_settings(tmp_path, database_url))
    assert set(ours) == set(beside) == set(SERVICES)
    taken = [*ours.values(), *beside.values(), *ports.METRICS.values()]
    assert len(set(taken)) == len(taken)
    default = metrics_ports(stack.settings.model_copy(update={"data_dir": tmp_path / "default"}))
    assert default == {module: ports.METRICS[module.removeprefix("svc_")] for module in SERVICES}
