"""The recorder takes rollouts and scored groups a fetch at a time (real NATS and Postgres): a
group recorded whole in one fetch goes out as lineage holds it without being read back; one fetch
may hold several runs, and a failure policy that ends one run must not hold back or end the others."""

import uuid

import pytest

from jetrl.bus import Delivery, Kind, stream_name
from jetrl.config import RunSpec
from jetrl.v1 import events_pb2 as ev
from sample_events import group_rollout, group_samples, rollout_delivery, rollout_of, sample_event
from svc_scheduler.active import prepare
from svc_scheduler.coordinator import Coordinator, group_id
from svc_scheduler.recorder import Recorder

B, G = 2, 2


def spec(model_dir, on_failure: str) -> RunSpec:
    return RunSpec.model_validate(
        {
            "model": {"path": str(model_dir)},
            "rollout": {"group_size": G, "max_new_tokens": 4},
            "train": {"steps": 2, "batch_groups": B},
            "reward": {"on_failure": on_failure},
            "schedule": {"eval_every": 0},
        }
    )


def delivery(run_id: str, kind: Kind) -> Delivery:
    return Delivery(f"jetrl.{run_id}.{kind}", run_id, kind, {}, 1, 1)


async def test_a_fetch_of_two_runs_fails_the_one_whose_policy_says_so_and_seals_the_other(
    js, lineage, untrained_model_dir
):
    strict, lenient = f"r{uuid.uuid4().hex[:8]}", f"r{uuid.uuid4().hex[:8]}"
    coordinator = Coordinator(js, lineage)
    recorder = Recorder(coordinator, lineage)
    for run_id, policy in ((strict, "fail"), (lenient, "zero")):
        await lineage.runs.create_run(run_id, "t", "", 2, B, G, "")
        await coordinator.start(prepare(run_id, spec(untrained_model_dir, policy)))
        for n in range(B):
            await recorder.on_rollouts(group_rollout(run_id, n, G))
    fetch = []
    for run_id in (strict, lenient):
        for n in range(B):
            scored = ev.ScoredGroup(group=await lineage.samples.load_group(group_id(run_id, n)), rewards=[1.0, 0.0])
            if run_id == strict and n == 0:
                scored.calls.append(ev.RewardCall(endpoint="judge:1", ok=False, error="judge is down"))
            fetch.append((scored, delivery(run_id, Kind.SCORED)))
    assert await recorder.on_scored(fetch) == {}
    failed = await lineage.runs.get_run(strict)
    assert failed.state == "FAILED" and "judge is down" in failed.message
    assert await lineage.batches.batches_sealed(strict) == 0
    assert (await lineage.runs.get_run(lenient)).state == "RUNNING"
    assert await lineage.batches.batches_sealed(lenient) == 1  # its batch, from the same fetch


async def test_a_group_recorded_whole_in_one_fetch_goes_out_as_lineage_holds_it(js, lineage, untrained_model_dir):
    """Group 0 comes in one rollout and is published from it; group 1's samples come in two
    fetches and it is read back. Both go to the reward stage exactly as lineage reads them."""
    run_id = f"r{uuid.uuid4().hex[:8]}"
    coordinator = Coordinator(js, lineage)
    recorder = Recorder(coordinator, lineage)
    await lineage.runs.create_run(run_id, "t", "", 2, B, G, "")
    await coordinator.start(prepare(run_id, spec(untrained_model_dir, "zero")))
    # as a worker sends them: the behaviour temperature (not kept in lineage) and the view named
    whole = rollout_of(*(sample_event(run_id, group_id(run_id, 0), i, temperature=0.7, view="main") for i in range(G)))
    assert await recorder.on_rollouts([(whole, rollout_delivery(run_id))]) == {}
    for sample in group_samples(run_id, 1, G):
        assert await recorder.on_rollouts([(rollout_of(sample), rollout_delivery(run_id))]) == {}
    subject = f"jetrl.{run_id}.{Kind.GROUPS}"
    first = await js.get_msg(stream_name(Kind.GROUPS), 1, subject=subject, next=True)
    second = await js.get_msg(stream_name(Kind.GROUPS), first.seq + 1, subject=subject, next=True)
    published = [ev.PromptGroup.FromString(m.data) for m in (first, second)]
    assert published == [await lineage.samples.load_group(group_id(run_id, n)) for n in range(B)]
    assert [len(g.samples) for g in published] == [G, G]


async def published_batch(js, run_id: str) -> ev.Batch:
    subject = f"jetrl.{run_id}.{Kind.BATCHES}"
    return ev.Batch.FromString((await js.get_msg(stream_name(Kind.BATCHES), 1, subject=subject, next=True)).data)


@pytest.mark.parametrize("restarted", [False, True])
async def test_a_batch_of_groups_scored_here_is_built_from_them_and_is_what_lineage_holds(
    js, lineage, untrained_model_dir, monkeypatch, restarted
):
    """The scheduler holds the groups it published and the scored events it recorded for them, and
    seals a batch of them without reading it back: the batch it publishes is lineage's, field for
    field. Groups scored by a scheduler that did not publish them (a restart in between) are read
    back, and that batch is lineage's too."""
    run_id = f"r{uuid.uuid4().hex[:8]}"
    coordinator = Coordinator(js, lineage)
    await lineage.runs.create_run(run_id, "t", "", 2, B, G, "")
    await coordinator.start(prepare(run_id, spec(untrained_model_dir, "zero")))
    for n in range(B):
        await Recorder(coordinator, lineage).on_rollouts(group_rollout(run_id, n, G))
    if restarted:
        coordinator = Coordinator(js, lineage)
        await coordinator.start(prepare(run_id, spec(untrained_model_dir, "zero")))
    read_back = []
    load_batch = lineage.batches.load_batch

    async def counted(batch_id: str) -> ev.Batch:
        read_back.append(batch_id)
        return await load_batch(batch_id)

    monkeypatch.setattr(lineage.batches, "load_batch", counted)
    scored = [
        (
            ev.ScoredGroup(group=await lineage.samples.load_group(group_id(run_id, n)), rewards=[1.0, 0.0]),
            delivery(run_id, Kind.SCORED),
        )
        for n in range(B)
    ]
    assert await Recorder(coordinator, lineage).on_scored(scored) == {}
    monkeypatch.undo()
    assert await lineage.batches.batches_sealed(run_id) == 1
    batch = await published_batch(js, run_id)
    assert read_back == ([batch.batch_id] if restarted else [])
    assert coordinator.held.get(run_id, {}) == {}  # what was held went into the batch
    assert batch == await lineage.batches.load_batch(batch.batch_id)
    assert [list(g.rewards) for g in batch.groups] == [[1.0, 0.0]] * B


async def test_a_group_is_held_before_it_goes_out_to_the_reward_stage(js, lineage, untrained_model_dir, monkeypatch):
    """The reward stage may score a group, and the scheduler record it, before the scheduler has
    published the rest of the fetch's groups: each group is held before it is published, or its
    batch would be read back for nothing."""
    import svc_scheduler.coordinator as coordinator_module

    run_id = f"r{uuid.uuid4().hex[:8]}"
    coordinator = Coordinator(js, lineage)
    await lineage.runs.create_run(run_id, "t", "", 2, B, G, "")
    await coordinator.start(prepare(run_id, spec(untrained_model_dir, "zero")))
    held_when_published = []
    publish = coordinator_module.publish

    async def watched(js_, run, kind, message, msg_id):
        if kind == Kind.GROUPS:
            held_when_published.append(msg_id in coordinator.assembled.get(run_id, {}))
        return await publish(js_, run, kind, message, msg_id=msg_id)

    monkeypatch.setattr(coordinator_module, "publish", watched)
    await Recorder(coordinator, lineage).on_rollouts([item for n in range(B) for item in group_rollout(run_id, n, G)])
    assert held_when_published == [True] * B
