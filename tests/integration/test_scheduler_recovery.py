"""A restarted scheduler re-derives every reaction that a crash lost (real NATS and Postgres).

The stall these reproduce: samples recorded by a new scheduler before it had resumed the run
(or by an old one that died right after the commit) completed a group whose event never went
out; the group stayed `admitted` for ever and admission counted it as running.
"""

import uuid

import nats.js.errors
import pytest

from jetrl.bus import Delivery, Kind, Wait, stream_name
from jetrl.config import RunSpec
from jetrl.v1 import events_pb2 as ev
from sample_events import group_rollout, group_samples, sample_event
from svc_scheduler.active import prepare
from svc_scheduler.coordinator import Coordinator, group_id
from svc_scheduler.recorder import Recorder

B, G = 2, 2


def small_spec(model_dir) -> RunSpec:
    """Two steps of B groups of G samples, no evaluation."""
    return RunSpec.model_validate(
        {
            "model": {"path": str(model_dir)},
            "rollout": {"group_size": G, "max_new_tokens": 4},
            "train": {"steps": 2, "batch_groups": B},
            "schedule": {"eval_every": 0},
        }
    )


@pytest.fixture
async def world(js, lineage, untrained_model_dir):
    """A run that a first scheduler started (groups admitted, tasks out), then lost."""
    spec = small_spec(untrained_model_dir)
    run_id = f"r{uuid.uuid4().hex[:8]}"
    await lineage.runs.create_run(run_id, "t", "", 2, B, G, "")
    first = Coordinator(js, lineage)
    await first.start(prepare(run_id, spec))
    return js, lineage, spec, run_id


def announcement(run_id: str, version: int, advantages=()) -> ev.WeightsAnnouncement:
    """The trainer's announcement of `version`, from the batch of step version - 1."""
    return ev.WeightsAnnouncement(
        run_id=run_id,
        version=version,
        parent_version=version - 1,
        batch_id=f"{run_id}.b{version - 1:06d}",
        uri="file:///x",
        sha256="0" * 64,
        size_bytes=1,
        advantages=advantages,
    )


async def groups_published(js) -> list[str]:
    info = await js.stream_info(stream_name(Kind.GROUPS))
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        out.append(ev.PromptGroup.FromString((await js.get_msg(stream_name(Kind.GROUPS), seq)).data).group_id)
    return out


async def test_samples_of_a_run_not_yet_resumed_wait_for_it(world):
    js, store, spec, run_id = world
    second = Coordinator(js, store)  # restarted: serving, the run not resumed yet
    recorder = Recorder(second, store)
    with pytest.raises(Wait):
        await recorder.on_rollouts(group_rollout(run_id, 0, G))
    assert (await store.groups.group_counts(run_id))["admitted"] == B  # nothing recorded while it waits
    await second.start(prepare(run_id, spec))
    await recorder.on_rollouts(group_rollout(run_id, 0, G))  # redelivered once the run is active
    assert await store.groups.group_state(group_id(run_id, 0)) == "generated"
    assert group_id(run_id, 0) in await groups_published(js)


async def test_a_group_completed_just_before_a_crash_is_published_on_restart(world):
    js, store, spec, run_id = world
    # the dead scheduler committed the last samples (crash point samples.recorded) and published nothing
    await store.samples.record_samples([(s, "") for s in group_samples(run_id, 1, G)])
    assert await store.groups.group_state(group_id(run_id, 1)) == "admitted"
    restarted = Coordinator(js, store)
    await restarted.start(prepare(run_id, spec))
    assert await store.groups.group_state(group_id(run_id, 1)) == "generated"
    assert await groups_published(js) == [group_id(run_id, 1)]


async def test_a_run_is_active_only_once_its_row_exists(js, lineage, untrained_model_dir):
    """CreateRun used to register the run in memory before inserting its row: a reconcile tick in
    between (or a failed insert) made `admit` read a run that did not exist, and the reconcile
    worker died with the scheduler."""
    spec = RunSpec.model_validate({"model": {"path": str(untrained_model_dir)}, "schedule": {"eval_every": 0}})
    rid = f"r{uuid.uuid4().hex[:8]}"
    coordinator = Coordinator(js, lineage)
    run = prepare(rid, spec)
    assert rid not in coordinator.runs
    await coordinator.reconcile(rid)  # the tick that used to crash: nothing to do yet
    assert await coordinator.admit(rid) == 0
    await lineage.runs.create_run(rid, "t", "", spec.train.steps, spec.train.batch_groups, 8, "")
    await coordinator.start(run)
    assert coordinator.runs[rid] is run and (await lineage.groups.group_counts(rid))["admitted"] > 0


async def test_a_run_completes_only_once_every_version_is_recorded(world):
    """Found by the chaos suite: a killed scheduler had fetched, not acked, the announcement of an
    earlier version; the last version's came first and the run completed with a version missing
    from lineage (its batch's groups left `batched`, the trainer's count above lineage's)."""
    js, store, spec, run_id = world
    coordinator = Coordinator(js, store)
    await coordinator.start(prepare(run_id, spec))

    async def announce(version: int) -> None:
        await store.versions.record_version(announcement(run_id, version), "")
        await coordinator.on_version(run_id, version)

    async def final_evaluation_requested() -> bool:
        info = await js.stream_info(stream_name(Kind.EVALS))
        requested = (
            [
                ev.EvalRequest.FromString((await js.get_msg(stream_name(Kind.EVALS), seq)).data).min_version
                for seq in range(info.state.first_seq, info.state.last_seq + 1)
            ]
            if info.state.messages
            else []
        )
        return 2 in requested

    await announce(2)  # the last version, before the first
    assert not await final_evaluation_requested() and run_id in coordinator.runs
    await announce(1)  # the late one: now every version is in lineage
    assert await final_evaluation_requested()
    await store.reports.record_evaluation(run_id, 2, 1, 2)
    await coordinator.on_evaluation(run_id, 2)
    assert (await store.runs.get_run(run_id)).state == "COMPLETED"


async def test_a_run_that_cannot_be_resumed_fails_with_the_reason(js, lineage, untrained_model_dir, monkeypatch):
    """A restarted scheduler that keeps failing to start one run (a bug, not an outage) used to
    retry its resume worker for ever while that run's events waited: the run must end FAILED.
    An outage during the resume is retried instead, and leaves the run RUNNING."""
    from sqlalchemy.exc import OperationalError

    from jetrl.config import dump_spec
    from svc_scheduler.app import resume_runs

    spec = RunSpec.model_validate({"model": {"path": str(untrained_model_dir)}, "schedule": {"eval_every": 0}})
    rid = f"r{uuid.uuid4().hex[:8]}"
    await lineage.runs.create_run(rid, "t", dump_spec(spec), spec.train.steps, spec.train.batch_groups, 8, "")
    coordinator = Coordinator(js, lineage)

    async def outage(run):
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("postgres is restarting"))

    monkeypatch.setattr(coordinator, "start", outage)
    with pytest.raises(OperationalError):
        await resume_runs(coordinator, lineage)
    assert (await lineage.runs.get_run(rid)).state == "RUNNING"

    async def bug(run):
        raise RuntimeError("a bug in start")

    monkeypatch.setattr(coordinator, "start", bug)
    await resume_runs(coordinator, lineage)
    record = await lineage.runs.get_run(rid)
    assert record.state == "FAILED" and "cannot resume" in record.message and "a bug in start" in record.message


class KindDown:
    """The scheduler's JetStream, except that publishing one kind fails while `down` (NATS went
    away between a decision's commit and its publish, or the kind's stream was electing a leader)."""

    def __init__(self, js, kind: Kind, error: Exception):
        self.js, self.kind, self.error, self.down = js, kind, error, True

    def __getattr__(self, name):
        return getattr(self.js, name)

    async def publish(self, subject, payload, **kwargs):
        if self.down and subject.endswith(f".{self.kind}"):
            raise self.error
        return await self.js.publish(subject, payload, **kwargs)


async def tasks_published(js, run_id: str) -> list[str]:
    out, seq = [], 1
    while True:
        try:
            msg = await js.get_msg(stream_name(Kind.TASKS), seq, subject=f"jetrl.{run_id}.tasks", next=True)
        except nats.js.errors.NotFoundError:
            return out
        out.append(ev.Task.FromString(msg.data).group_id)
        seq = msg.seq + 1


async def test_tasks_of_an_admission_whose_publish_failed_go_out_at_the_next_reconcile(
    js, lineage, untrained_model_dir
):
    spec = small_spec(untrained_model_dir)
    run_id = f"r{uuid.uuid4().hex[:8]}"
    await lineage.runs.create_run(run_id, "t", "", 2, B, G, "")
    broker = KindDown(js, Kind.TASKS, RuntimeError("no route to the broker"))
    coordinator = Coordinator(broker, lineage)
    with pytest.raises(RuntimeError):
        await coordinator.start(prepare(run_id, spec))  # the groups are recorded, their tasks never sent
    assert (await lineage.groups.group_counts(run_id))["admitted"] == B
    assert await tasks_published(js, run_id) == []
    broker.down = False
    await coordinator.reconcile(run_id)  # admission has no slot left: only a re-publish sends them
    assert sorted(await tasks_published(js, run_id)) == [group_id(run_id, n) for n in range(B)]


async def batches_published(js, run_id: str) -> list[str]:
    try:
        msg = await js.get_msg(stream_name(Kind.BATCHES), 1, subject=f"jetrl.{run_id}.batches", next=True)
    except nats.js.errors.NotFoundError:
        return []
    return [ev.Batch.FromString(msg.data).batch_id]


async def test_a_batch_whose_publish_failed_after_its_seal_goes_out_at_the_next_reconcile(world):
    """The node-loss stall: the batch was sealed in lineage, its publish met the batches stream
    electing a leader (NoStreamResponseError), the scored fetch came back, found its groups
    recorded and the batch sealed, and nothing published the batch again: a synchronous run
    waited for it forever."""
    js, store, spec, run_id = world
    broker = KindDown(js, Kind.BATCHES, nats.js.errors.NoStreamResponseError())
    coordinator = Coordinator(broker, store)
    await coordinator.start(prepare(run_id, spec))
    recorder = Recorder(coordinator, store)
    for n in range(B):
        await recorder.on_rollouts(group_rollout(run_id, n, G))
    scored = [
        (
            ev.ScoredGroup(group=await store.samples.load_group(group_id(run_id, n)), rewards=[1.0, 0.0]),
            Delivery(f"jetrl.{run_id}.scored", run_id, Kind.SCORED, {}, 1, 1),
        )
        for n in range(B)
    ]
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await recorder.on_scored(scored)
    assert await store.batches.batches_sealed(run_id) == 1 and await batches_published(js, run_id) == []
    broker.down = False
    assert await recorder.on_scored(scored) == {}  # redelivered: already recorded, already sealed
    await coordinator.reconcile(run_id)  # the tick after
    assert await batches_published(js, run_id) == [f"{run_id}.b000000"]


async def test_a_run_completes_only_once_what_every_version_trained_is_recorded(world):
    """A new version's row and the run's head are recorded before what it trained, so that the
    next groups start sooner (Recorder.on_weights); a scheduler that dies between the two leaves
    the version's groups `batched` until its announcement comes again. The last version must not
    complete the run meanwhile."""
    js, store, spec, run_id = world
    coordinator = Coordinator(js, store)
    await coordinator.start(prepare(run_id, spec))

    async def seal(step: int) -> list[ev.SampleAdvantage]:
        """Batch `step`'s groups generated, scored and sealed: the advantages its version names."""
        samples = []
        for n in range(step * B, (step + 1) * B):
            group = [sample_event(run_id, group_id(run_id, n), i, token_versions=[step, step]) for i in range(G)]
            samples += group
            await store.samples.record_samples([(s, "") for s in group])
            await store.groups.mark_groups([group_id(run_id, n)], "generated")
            group = await store.samples.load_group(group_id(run_id, n))
            await store.batches.record_scored(ev.ScoredGroup(group=group, rewards=[1.0, 0.0]), "")
        assert (await store.batches.seal_batch(run_id, step, B, f"{run_id}.b{step:06d}", 0)).groups
        return [ev.SampleAdvantage(sample_id=s.sample_id) for s in samples]

    await store.versions.record_version(announcement(run_id, 1, await seal(0)), "")
    await coordinator.on_version(run_id, 1)  # admits batch 1's groups
    last = announcement(run_id, 2, await seal(1))
    await store.versions.record_head(last, "")  # ... and the scheduler died here
    await coordinator.finish(run_id)

    async def asked_for() -> list[int]:
        info = await js.stream_info(stream_name(Kind.EVALS))
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
            msg = await js.get_msg(stream_name(Kind.EVALS), seq)
            if msg.subject == f"jetrl.{run_id}.{Kind.EVALS}":
                found.append(ev.EvalRequest.FromString(msg.data).min_version)
        return found

    assert 2 not in await asked_for() and run_id in coordinator.runs  # no final evaluation: not over
    await store.versions.record_trained(last)  # the announcement again
    await coordinator.on_version(run_id, 2)
    assert 2 in await asked_for()
    await store.reports.record_evaluation(run_id, 2, 1, 2)
    await coordinator.on_evaluation(run_id, 2)
    assert (await store.runs.get_run(run_id)).state == "COMPLETED"
    assert len(await store.reports.trained_sample_rows(run_id)) == 2 * B * G
