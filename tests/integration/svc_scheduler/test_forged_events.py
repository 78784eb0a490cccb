"""Events that are well formed but cannot be true (real NATS and Postgres): the recorder refuses
them with the reason and lineage does not change; one that took an id the run needs fails the run
instead of leaving it waiting (issue 14's forged-event cases)."""

import uuid

import pytest
from sqlalchemy import select

from jetrl.bus import (
    CAUSE_INVALID,
    DLQ_CAUSE,
    DLQ_MSG_ID,
    DLQ_REASON,
    Delivery,
    InvalidEvent,
    Kind,
    Wait,
    publish,
    stream_name,
)
from jetrl.config import RunSpec
from jetrl.digest import batch_digest
from jetrl.ids import batch_id, group_id, rollout_msg_id
from jetrl.lineage.models import Reward, Sample
from jetrl.policy.prompts import PromptTokenizer
from jetrl.v1 import events_pb2 as ev
from jetrl.v1 import services_pb2 as svc
from sample_events import rollout_of, sample_event
from svc_scheduler.active import prepare
from svc_scheduler.coordinator import Coordinator
from svc_scheduler.recorder import Recorder
from svc_scheduler.server import SchedulerServicer

B, G, STEPS = 2, 2, 3


def delivery(run_id: str, kind: Kind, headers: dict | None = None) -> Delivery:
    return Delivery(f"jetrl.{run_id}.{kind}", run_id, kind, headers or {}, 1, 1)


@pytest.fixture
async def world(js, lineage, untrained_model_dir):
    """A run whose batch 0 is sealed from two scored groups: (recorder, run id, tokenizer)."""
    spec = RunSpec.model_validate(
        {
            "model": {"path": str(untrained_model_dir)},
            "rollout": {"group_size": G, "max_new_tokens": 4},
            "train": {"steps": STEPS, "batch_groups": B},
            "schedule": {"eval_every": 0},
        }
    )
    run_id = f"r{uuid.uuid4().hex[:8]}"
    coordinator = Coordinator(js, lineage)
    recorder = Recorder(coordinator, lineage)
    await lineage.runs.create_run(run_id, "t", "", STEPS, B, G, "")
    await coordinator.start(prepare(run_id, spec))
    tokenizer = PromptTokenizer.load(untrained_model_dir)
    for n in range(B):
        assert (
            await recorder.on_rollouts(
                [(rollout_of(*(sample(tokenizer, run_id, n, i) for i in range(G))), delivery(run_id, Kind.ROLLOUTS))]
            )
            == {}
        )
    scored = [
        (ev.ScoredGroup(group=await lineage.samples.load_group(group_id(run_id, n)), rewards=[1.0, 0.0]), None)
        for n in range(B)
    ]
    assert await recorder.on_scored([(s, delivery(run_id, Kind.SCORED)) for s, _ in scored]) == {}
    assert await lineage.batches.batches_sealed(run_id) == 1
    return recorder, run_id, tokenizer


def sample(tokenizer: PromptTokenizer, run_id: str, n: int, index: int, **fields) -> ev.Sample:
    ids = fields.pop("completion_token_ids", [7, 8])
    text = fields.pop("text", tokenizer.backend.decode(ids, skip_special_tokens=True))
    return sample_event(run_id, group_id(run_id, n), index, completion_token_ids=ids, text=text, **fields)


def announcement(run_id: str, version: int, sample_ids: list[str], **fields) -> ev.WeightsAnnouncement:
    return ev.WeightsAnnouncement(
        **(
            dict(
                run_id=run_id,
                version=version,
                parent_version=version - 1,
                batch_id=batch_id(run_id, version - 1),
                uri="file:///x",
                sha256="a" * 64,
                advantages=[ev.SampleAdvantage(sample_id=s) for s in sample_ids],
            )
            | fields
        )
    )


def batch_samples(run_id: str) -> list[str]:
    return [f"{group_id(run_id, n)}.{i}" for n in range(B) for i in range(G)]


async def test_a_forged_last_version_does_not_complete_the_run(world, lineage):
    recorder, run_id, _ = world
    weights = delivery(run_id, Kind.WEIGHTS)
    with pytest.raises(Wait):  # the last version before the first: it waits for v1 (it may be late)
        await recorder.on_weights(announcement(run_id, STEPS, batch_samples(run_id)), weights)
    with pytest.raises(InvalidEvent, match="comes from v - 1"):
        await recorder.on_weights(announcement(run_id, 1, batch_samples(run_id), batch_id=f"{run_id}.b7"), weights)
    with pytest.raises(InvalidEvent, match="misses 1"):
        await recorder.on_weights(announcement(run_id, 1, batch_samples(run_id)[1:]), weights)
    with pytest.raises(InvalidEvent, match="comes from v - 1"):
        await recorder.on_weights(announcement(run_id, 1, batch_samples(run_id), parent_version=3), weights)
    assert await lineage.versions.versions_recorded(run_id) == 0
    assert (await lineage.runs.get_run(run_id)).state == "RUNNING"
    real = announcement(run_id, 1, batch_samples(run_id))
    await recorder.on_weights(real, weights)
    await recorder.on_weights(real, weights)  # redelivered: the same bytes, nothing new
    with pytest.raises(InvalidEvent, match="other weights"):
        await recorder.on_weights(announcement(run_id, 1, batch_samples(run_id), sha256="b" * 64), weights)
    with pytest.raises(InvalidEvent, match="never sealed"):  # v2 from batch 1, which lineage has not sealed
        await recorder.on_weights(announcement(run_id, 2, []), weights)
    assert await lineage.versions.versions_recorded(run_id) == 1
    assert (await lineage.runs.get_run(run_id)).policy_version == 1


async def test_a_teacher_version_for_a_run_with_no_teacher_is_refused(world, lineage):
    recorder, run_id, _ = world
    with pytest.raises(InvalidEvent, match="no teacher"):
        await recorder.on_teacher(announcement(run_id, 1, []), delivery(run_id, Kind.TEACHER))
    assert (await lineage.runs.get_run(run_id)).teacher_version is None


async def test_samples_the_model_did_not_generate_are_refused(world, lineage):
    recorder, run_id, tokenizer = world
    await recorder.on_weights(announcement(run_id, 1, batch_samples(run_id)), delivery(run_id, Kind.WEIGHTS))
    assert (await lineage.samples.load_group(group_id(run_id, 2))).samples == []  # admitted for batch 1
    fine = sample(tokenizer, run_id, 2, 1)
    rejected = await recorder.on_rollouts(
        [
            (rollout_of(sample(tokenizer, run_id, 2, 0, text="76"), fine), delivery(run_id, Kind.ROLLOUTS)),
            (
                rollout_of(sample(tokenizer, run_id, 2, 0, completion_token_ids=[7, 1_000_000]), fine),
                delivery(run_id, Kind.ROLLOUTS),
            ),
            (
                rollout_of(sample(tokenizer, run_id, 0, 1, attempt=2)),
                delivery(run_id, Kind.ROLLOUTS),
            ),  # a batched group
        ]
    )
    assert "not what its tokens decode to" in rejected[0]
    assert "outside the model's vocabulary" in rejected[1]
    assert "trained at attempt 0, so no such sample can be new" in rejected[2]
    assert [len((await lineage.samples.load_group(group_id(run_id, n))).samples) for n in range(B)] == [G] * B
    # a rollout with one sample the model did not generate is refused whole: its good sample is not stored either
    assert (await lineage.samples.load_group(group_id(run_id, 2))).samples == []


async def test_a_refused_event_that_took_one_of_the_runs_ids_fails_the_run(world, lineage):
    recorder, run_id, _ = world
    refused = {DLQ_CAUSE: CAUSE_INVALID, DLQ_REASON: "bad"}
    # refused, but under no id of the run's (junk, a test's): the run goes on
    await recorder.on_dead_letter(b"x", delivery(run_id, Kind.DLQ, refused | {DLQ_MSG_ID: "junk"}))
    assert (await lineage.runs.get_run(run_id)).state == "RUNNING"
    taken = batch_id(run_id, 1)
    await recorder.on_dead_letter(b"x", delivery(run_id, Kind.DLQ, refused | {DLQ_MSG_ID: taken}))
    failed = await lineage.runs.get_run(run_id)
    assert failed.state == "FAILED" and taken in failed.message and "bad" in failed.message


async def test_rewards_from_endpoints_the_run_does_not_name_are_refused(world, lineage):
    recorder, run_id, tokenizer = world
    scored = ev.ScoredGroup(group=await lineage.samples.load_group(group_id(run_id, 0)), rewards=[1.0, 1.0])
    scored.calls.extend(ev.RewardCall(endpoint=e, ok=True, rewards=[1.0, 1.0]) for e in ("verify:1", "evil:6666"))
    rejected = await recorder.on_scored([(scored, delivery(run_id, Kind.SCORED))])
    assert "evil:6666" in rejected[0] and "one reward endpoint" in rejected[0]
    async with lineage.engine.connect() as conn:
        of_run = select(Reward.endpoint).join(Sample, Sample.sample_id == Reward.sample_id)
        endpoints = (await conn.execute(of_run.where(Sample.run_id == run_id))).scalars()
    assert "evil:6666" not in set(endpoints)


async def test_the_digest_of_a_sealed_batch_is_that_of_the_batch_published(world, js, lineage):
    recorder, run_id, _ = world
    servicer = SchedulerServicer(recorder.coordinator, lineage, peers=None)  # type: ignore[arg-type]
    published = ev.Batch.FromString(
        (await js.get_last_msg(stream_name(Kind.BATCHES), f"jetrl.{run_id}.{Kind.BATCHES}")).data
    )
    request = svc.GetBatchDigestRequest(run_id=run_id, batch_id=batch_id(run_id, 0))
    # the first answer is the digest the scheduler kept when it published the batch, the next
    # (a redelivered batch, another scheduler) is read back from lineage: both the same
    assert batch_id(run_id, 0) in recorder.coordinator.digests[run_id]
    assert (await servicer.GetBatchDigest(request, Refusing())).sha256 == batch_digest(published)
    assert batch_id(run_id, 0) not in recorder.coordinator.digests[run_id]
    assert (await servicer.GetBatchDigest(request, Refusing())).sha256 == batch_digest(published)
    with pytest.raises(LookupError, match="NOT_FOUND"):
        await servicer.GetBatchDigest(
            svc.GetBatchDigestRequest(run_id=run_id, batch_id=batch_id(run_id, 1)), Refusing()
        )


class Refusing:
    """A servicer context whose abort raises, naming the status."""

    async def abort(self, code, details):
        raise LookupError(f"{code.name}: {details}")


async def test_a_run_id_events_were_published_under_before_it_existed_is_refused(js, lineage, untrained_model_dir):
    """A rollout published under a run id before the run exists takes that task attempt's message id:
    the run's own rollout would be dropped as its duplicate and the run would wait for ever."""

    class NoProblems:
        async def problems(self, spec):
            return []

    run_id = f"r{uuid.uuid4().hex[:8]}"
    early = rollout_of(sample_event(run_id, group_id(run_id, 0), 0))
    await publish(js, run_id, Kind.ROLLOUTS, early, msg_id=rollout_msg_id(early.group_id, 0))
    servicer = SchedulerServicer(Coordinator(js, lineage), lineage, NoProblems())  # type: ignore[arg-type]
    spec = f"model: {{path: {untrained_model_dir}}}\nschedule: {{eval_every: 0}}\n"
    with pytest.raises(LookupError, match=f"ALREADY_EXISTS: events were published under run id '{run_id}'"):
        await servicer.CreateRun(svc.CreateRunRequest(spec_yaml=spec, run_id=run_id), Refusing())
    assert await lineage.runs.get_run(run_id) is None
