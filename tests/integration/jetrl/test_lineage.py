"""Lineage writes on a real Postgres: idempotent, forward-only, and complete for every sample."""

import uuid

import pytest
from sqlalchemy import create_engine, select, text

from bulk_lineage import explain_analyze, insert_samples, rows_read
from jetrl.ids import dead_letter_id
from jetrl.lineage.batches import Scored
from jetrl.lineage.db import check_database, make_engine, migrate
from jetrl.lineage.groups import NewGroup, admission_view_statement
from jetrl.lineage.models import Base, PartialSample, PromptGroup, Reward, Sample, SampleSegment
from jetrl.lineage.reports import version_points_statement
from jetrl.lineage.samples import GroupProgress, UnknownGroup
from jetrl.lineage.store import LineageStore
from jetrl.states import GroupState
from jetrl.v1 import events_pb2 as ev
from jetrl.v1.reward_pb2 import SampleScore
from sample_events import sample_event
from svc_scheduler.recorder import scored_state

G = 2


@pytest.fixture
async def store(database_url):
    engine = make_engine(database_url)
    yield LineageStore(engine)
    await engine.dispose()


@pytest.fixture
async def run_id(store):
    run_id = f"r{uuid.uuid4().hex[:8]}"
    await store.runs.create_run(
        run_id, "test", "model: {path: /m}\n", total_steps=3, batch_groups=1, group_size=G, trace_id="ab" * 16
    )
    return run_id


def task(run_id: str, n: int, step: int = 0) -> ev.Task:
    return ev.Task(
        run_id=run_id,
        group_id=f"{run_id}.g{n:06d}",
        prompt_id=f"train-{n}",
        prompt=f"{n}+1=",
        prompt_token_ids=[5, 6],
        num_samples=G,
        policy_version=0,
        step=step,
    )


def sample(run_id: str, n: int, index: int, versions=(0, 0)) -> ev.Sample:
    return sample_event(run_id, f"{run_id}.g{n:06d}", index, token_versions=list(versions), text=str(n + 1))


async def admitted_and_generated(store, run_id: str, n: int = 0) -> ev.PromptGroup:
    await store.groups.admit_groups(
        [NewGroup(task(run_id, n), str(n + 1), "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01", "ab" * 16)]
    )
    counts = await store.samples.record_samples([(sample(run_id, n, i), "ef" * 16) for i in range(G)])
    assert counts == {(f"{run_id}.g{n:06d}", run_id): GroupProgress(G, "admitted", False)}
    return await store.samples.load_group(f"{run_id}.g{n:06d}")


def test_migrations_match_the_models(database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ: add an Alembic revision ({diff})"


async def test_migrating_twice_changes_nothing_and_the_schema_checks_out(database_url):
    migrate(database_url)
    await check_database(database_url)


async def test_samples_are_counted_once_and_a_group_loads_back_in_order(store, run_id):
    group = await admitted_and_generated(store, run_id)
    redelivered = await store.samples.record_samples([(sample(run_id, 0, 1), "")])
    assert redelivered == {(group.group_id, run_id): GroupProgress(G, "admitted", False)}
    assert [s.index for s in group.samples] == [0, 1]
    assert group.reference == "1" and group.prompt == "0+1=" and list(group.samples[0].logprobs) == [-0.5, -0.25]
    assert (await store.groups.group_counts(run_id))["admitted"] == 1
    assert await store.groups.admitted_groups(run_id) == [(0, 0, 0, "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")]


async def test_a_sample_of_an_unknown_group_is_not_stored_and_its_group_named(store, run_id):
    await store.groups.admit_groups([NewGroup(task(run_id, 1), "2", "", "")])
    counts = await store.samples.record_samples([(sample(run_id, 99, 0), ""), (sample(run_id, 1, 0), "")])
    assert counts == {
        (f"{run_id}.g000099", run_id): None,
        (f"{run_id}.g000001", run_id): GroupProgress(1, "admitted", False),
    }
    # a sample claiming another run's group is not that group's either
    forged = sample(run_id, 1, 1)
    forged.run_id = f"{run_id}x"
    counts = await store.samples.record_samples([(forged, ""), (sample(run_id, 1, 2), "")])
    assert counts == {
        (f"{run_id}.g000001", f"{run_id}x"): None,
        (f"{run_id}.g000001", run_id): GroupProgress(2, "admitted", False),
    }
    assert [s.index for s in (await store.samples.load_group(f"{run_id}.g000001")).samples] == [0, 2]


async def test_a_new_sample_for_an_attempt_not_in_flight_is_refused_and_nothing_stored(store, run_id):
    group = await admitted_and_generated(store, run_id)
    gid = group.group_id
    before = await store.samples.load_group(gid)
    # forged: another attempt of a group generating at attempt 0, with different text
    ahead = sample_event(run_id, gid, 0, attempt=3, text="forged")
    # forged: a partial sample of a group the scheduler never aborted (a forged ABORT's result)
    unasked = sample_event(run_id, gid, 1, attempt=0, finish_reason="aborted")
    counts = await store.samples.record_samples([(ahead, ""), (unasked, "")])
    assert counts[(gid, run_id)].refused.keys() == {(f"{gid}.0", 3), (f"{gid}.1", 0)}
    await store.groups.mark_groups([gid], GroupState.GENERATED)
    # done generating: not even its own attempt may bring a new sample (a stray partial, say)
    late = sample_event(run_id, gid, 1, attempt=0, finish_reason="aborted")
    counts = await store.samples.record_samples([(late, ""), (sample(run_id, 0, 0), "")])
    assert counts[(gid, run_id)].refused.keys() == {(f"{gid}.1", 0)}  # the redelivery of sample 0 is no such thing
    assert "partial sample" in counts[(gid, run_id)].refused[(f"{gid}.1", 0)]
    assert "generated at attempt 0" in counts[(gid, run_id)].refused[(f"{gid}.1", 0)]
    assert await store.samples.load_group(gid) == before
    async with store.engine.connect() as conn:
        segments = (await conn.execute(select(SampleSegment.attempt).where(SampleSegment.group_id == gid))).all()
        partials = (await conn.execute(select(PartialSample.sample_id).where(PartialSample.group_id == gid))).all()
    assert sorted(a for (a,) in segments) == [0] * G and partials == []


async def test_group_states_only_move_forward(store, run_id):
    group = await admitted_and_generated(store, run_id)
    await store.groups.mark_groups([group.group_id], "scored")
    await store.groups.mark_groups([group.group_id], "generated")
    assert await store.groups.group_state(group.group_id) == "scored"


async def test_the_full_life_of_a_sample_is_recorded(store, run_id):
    group = await admitted_and_generated(store, run_id)
    await store.groups.mark_groups([group.group_id], "generated")
    scored = ev.ScoredGroup(
        group=group,
        rewards=[1.0, 0.0],
        reward_server="verify@1",
        details=[
            SampleScore(extracted_answer="1", detail="correct"),
            SampleScore(extracted_answer="", detail="no answer"),
        ],
    )
    await store.batches.record_scored(scored, "")
    await store.batches.record_scored(scored, "")  # redelivered
    batch_id = f"{run_id}.b000000"
    assert not (await store.batches.seal_batch(run_id, 0, 2, batch_id, 0)).groups  # only one group is scored
    assert (await store.batches.seal_batch(run_id, 0, 1, batch_id, 0)).groups
    assert not (await store.batches.seal_batch(run_id, 0, 1, batch_id, 0)).groups  # decided once
    assert await store.batches.batches_sealed(run_id) == 1 and await store.batches.untrained_batches(run_id) == [
        batch_id
    ]
    batch = await store.batches.load_batch(batch_id)
    [loaded] = batch.groups
    assert (batch.step, batch.policy_version, loaded.group.step) == (0, 0, 0)
    assert list(loaded.rewards) == [1.0, 0.0] and loaded.details[1].detail == "no answer"
    assert loaded.reward_server == "verify@1"

    ann = ev.WeightsAnnouncement(
        run_id=run_id,
        version=1,
        parent_version=0,
        batch_id=batch.batch_id,
        uri="file:///w/v1",
        sha256="0" * 64,
        size_bytes=10,
        metrics={"loss": 0.5},
        samples_trained_total=2,
        advantages=[
            ev.SampleAdvantage(
                sample_id=s.sample_id,
                reward=r,
                advantage=a,
                staleness=st,
                trained_tokens=2 - m,
                stale_masked_tokens=m,
                offpolicy_tokens=st and 2 - m,
            )
            for s, r, a, st, m in zip(group.samples, [1.0, 0.0], [0.7071, -0.7071], [0, 1], [0, 1])
        ],
    )
    await store.versions.record_version(ann, "")
    await store.versions.record_version(ann, "")  # redelivered
    assert await store.batches.untrained_batches(run_id) == []
    assert (await store.groups.group_counts(run_id))["trained"] == 1
    assert (await store.runs.get_run(run_id)).policy_version == 1

    rows = await store.reports.trained_sample_rows(run_id)
    assert [
        (
            r.min_version,
            r.reward,
            round(r.advantage, 4),
            r.trained_version,
            r.batch_id,
            r.staleness,
            r.trained_tokens,
            r.stale_masked_tokens,
            r.attempts,
        )
        for r in rows
    ] == [(0, 1.0, 0.7071, 1, batch.batch_id, 0, 2, 0, 1), (0, 0.0, -0.7071, 1, batch.batch_id, 1, 1, 1, 1)]
    stats = await store.reports.run_stats(run_id)
    assert (stats.samples_generated, stats.samples_trained, stats.mean_reward_last_batch) == (2, 2, 0.5)
    # staleness 0 and 1; 1 of 3 trained tokens came from an older version; 1 token was too stale
    assert (stats.mean_staleness, stats.max_staleness, stats.stale_masked_tokens) == (0.5, 1, 1)
    assert stats.offpolicy_token_share == pytest.approx(1 / 3)

    # read back as `jetrl report` plots it and `jetrl explain` tells it
    [point] = await store.reports.version_points(run_id)
    assert (point.version, point.samples_trained_total, point.metrics) == (1, 2, {"loss": 0.5})
    assert (point.mean_reward, point.mean_staleness, point.max_staleness) == (0.5, 0.5, 1)
    assert point.top_answer_share == 0.5  # answers "1" and "" (none): "1" is one of the two
    assert await store.reports.version_points(run_id, since=2) == []  # from a version on
    first = group.samples[0].sample_id
    story = await store.reports.sample_story(first)
    assert (story.group_state, story.reward_server, story.batch_step, story.trained_version) == (
        "trained",
        "verify@1",
        0,
        1,
    )
    assert (story.prompt, story.reference, story.text) == ("0+1=", "1", "1")
    [reward] = await store.reports.sample_rewards(first)
    assert (reward.server, reward.reward, reward.extracted_answer, reward.detail) == ("verify@1", 1.0, "1", "correct")
    assert await store.reports.sample_story(f"{run_id}.unknown") is None


async def test_dynamic_sampling_records_uniform_groups_as_filtered(store, run_id):
    uniform = ev.ScoredGroup(group=await admitted_and_generated(store, run_id, 0), rewards=[1.0, 1.0])
    mixed = ev.ScoredGroup(group=await admitted_and_generated(store, run_id, 1), rewards=[1.0, 0.0])
    for scored in (uniform, mixed):
        await store.batches.record_scored(scored, "", scored_state(scored, dynamic_sampling=True, drop_failed=False))
    assert await store.groups.group_state(uniform.group.group_id) == "filtered"
    assert await store.groups.group_state(mixed.group.group_id) == "scored"
    assert [r for r in (await store.samples.load_group(uniform.group.group_id)).samples]  # kept in lineage
    other = ev.ScoredGroup(group=await admitted_and_generated(store, run_id, 2), rewards=[0.0, 0.0])
    await store.batches.record_scored(other, "")  # without dynamic sampling a uniform group is scored
    assert await store.groups.group_state(other.group.group_id) == "scored"


async def test_a_group_too_stale_to_train_anything_expires_instead_of_joining_a_batch(store, run_id):
    fresh, stale = ev.ScoredGroup(rewards=[1.0, 0.0]), ev.ScoredGroup(rewards=[1.0, 0.0])
    stale.group.CopyFrom(await admitted_and_generated(store, run_id, 0))  # tokens of version 0
    await store.groups.admit_groups([NewGroup(task(run_id, 1), "2", "", "")])
    await store.samples.record_samples([(sample(run_id, 1, i, versions=(0, 1)), "") for i in range(G)])
    fresh.group.CopyFrom(await store.samples.load_group(f"{run_id}.g000001"))
    for scored in (stale, fresh):
        await store.batches.record_scored(scored, "")
    # batch 2 with η = 1 may train tokens of version 1 and newer: group 0 has none
    sealed = await store.batches.seal_batch(run_id, 2, 1, f"{run_id}.b000002", max_staleness=1)
    assert (sealed.groups, sealed.expired) == ([fresh.group.group_id], [stale.group.group_id])
    assert [g.group.group_id for g in (await store.batches.load_batch(f"{run_id}.b000002")).groups] == [
        fresh.group.group_id
    ]
    assert await store.groups.group_state(stale.group.group_id) == "expired"


async def test_the_admission_view_counts_as_the_groups_states_do_through_a_run(store, run_id):
    """Admission reads B groups per sealed batch where it counted batched and trained groups, and
    the largest group number where it counted every group: the same numbers at every step."""

    async def agrees(version: int) -> None:
        view, counts = await store.groups.admission_view(run_id), await store.groups.group_counts(run_id)
        assert (view.state, view.policy_version, view.admitted) == ("RUNNING", version, counts["admitted"])
        accepted = sum(counts[s] for s in ("generated", "scored", "batched", "trained"))
        assert (view.accepted(1), view.groups) == (accepted, sum(counts.values()))  # the fixture's B = 1

    await agrees(0)
    group = await admitted_and_generated(store, run_id, 0)
    await agrees(0)
    await store.groups.admit_groups([NewGroup(task(run_id, n), str(n + 1)) for n in (1, 2)])
    await agrees(0)
    await store.groups.mark_groups([group.group_id], "generated")
    await agrees(0)
    await store.batches.record_scored(ev.ScoredGroup(group=group, rewards=[1.0, 0.0]), "")
    await agrees(0)
    assert (await store.batches.seal_batch(run_id, 0, 1, f"{run_id}.b000000", 0)).groups
    await agrees(0)
    ann = ev.WeightsAnnouncement(run_id=run_id, version=1, parent_version=0, batch_id=f"{run_id}.b000000")
    ann.advantages.extend(ev.SampleAdvantage(sample_id=s.sample_id) for s in group.samples)
    await store.versions.record_version(ann, "")
    await agrees(1)
    await store.samples.record_samples([(sample(run_id, 1, i), "") for i in range(G)])
    await store.groups.mark_groups([f"{run_id}.g000001"], "generated")
    uniform = ev.ScoredGroup(group=await store.samples.load_group(f"{run_id}.g000001"), rewards=[1.0, 1.0])
    await store.batches.record_scored(uniform, "", scored_state(uniform, dynamic_sampling=True, drop_failed=False))
    await agrees(1)  # filtered: no longer accepted
    assert await store.groups.admission_view("no-such-run") is None


async def test_the_admission_view_reads_only_the_groups_still_moving(store, run_id):
    """Admission counted every group of the run by state, several times a version: 20 ms at 200,000
    groups and growing. Its reads now go through indexes that skip the groups a run is done with."""
    async with store.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO prompt_groups (group_id, run_id, n, prompt_id, admitted_version, state, attempt,"
                " attempt_version, recycled, view, traceparent, trace_id)"
                " SELECT :run || '.g' || i, :run, i, 'p', 0, 'trained', 0, 0, 0, 'main', '', ''"
                " FROM generate_series(0, 4999) AS i"
            ),
            {"run": run_id},
        )
    await store.groups.admit_groups([NewGroup(task(run_id, 5000), "1")])
    async with store.engine.begin() as conn:
        await conn.execute(text("ANALYZE prompt_groups"))
        plan = await explain_analyze(conn, admission_view_statement(run_id))
    read = rows_read(plan, "prompt_groups")
    # a row for the admitted count and one for each state's newest group (trained and admitted here)
    assert read <= 3, f"read {read} group rows of a run that has 5,001, 5,000 of them trained"
    view = await store.groups.admission_view(run_id)
    assert (view.admitted, view.complete, view.groups) == (1, 0, 5001)


async def test_scores_for_unrecorded_samples_are_refused(store, run_id):
    group = await admitted_and_generated(store, run_id)
    group.samples[1].sample_id = "bogus"
    with pytest.raises(UnknownGroup):
        await store.batches.record_scored(ev.ScoredGroup(group=group, rewards=[1.0, 0.0]), "")


async def test_a_fetch_of_scored_groups_is_recorded_together_and_an_unknown_one_alone_refused(store, run_id):
    groups = [await admitted_and_generated(store, run_id, n) for n in range(3)]
    bogus = ev.PromptGroup()
    bogus.CopyFrom(groups[2])
    bogus.samples[0].sample_id = "bogus"
    items = [
        Scored(ev.ScoredGroup(group=groups[0], rewards=[1.0, 0.0], reward_server="verify@1"), trace_id="01" * 16),
        Scored(ev.ScoredGroup(group=bogus, rewards=[1.0, 1.0])),
        Scored(ev.ScoredGroup(group=groups[1], rewards=[0.0, 0.0]), GroupState.FILTERED),
        Scored(ev.ScoredGroup(group=groups[0], rewards=[1.0, 0.0], reward_server="verify@1")),  # redelivered
    ]
    recorded = await store.batches.record_scored_groups(items)
    results = recorded.states
    assert [r if isinstance(r, str) else type(r) for r in results] == ["scored", UnknownGroup, "filtered", "scored"]
    assert recorded.moved == set()  # groups[0] is named twice: whose rewards lineage kept is not told
    assert [await store.groups.group_state(g.group_id) for g in groups] == ["scored", "filtered", "admitted"]
    async with store.engine.connect() as conn:
        unscored = (await conn.execute(select(Sample.reward).where(Sample.group_id == groups[2].group_id))).all()
    assert [r for (r,) in unscored] == [None, None]  # the refused item wrote nothing
    assert (await store.batches.seal_batch(run_id, 0, 1, f"{run_id}.b000000", 0)).groups
    [trained] = (await store.batches.load_batch(f"{run_id}.b000000")).groups
    assert (trained.group.group_id, list(trained.rewards), trained.reward_server) == (
        groups[0].group_id,
        [1.0, 0.0],
        "verify@1",
    )


async def test_a_scored_group_naming_another_groups_sample_is_refused_even_in_the_same_fetch(store, run_id):
    mine, theirs = [await admitted_and_generated(store, run_id, n) for n in range(2)]
    forged = ev.PromptGroup()
    forged.CopyFrom(mine)
    forged.samples[1].CopyFrom(theirs.samples[1])  # a real sample id, of the other group
    recorded = await store.batches.record_scored_groups(
        [
            Scored(ev.ScoredGroup(group=theirs, rewards=[0.0, 0.0])),
            Scored(ev.ScoredGroup(group=forged, rewards=[1.0, 1.0])),
        ]
    )
    results = recorded.states
    assert results[0] == "scored" and isinstance(results[1], UnknownGroup)
    assert recorded.moved == {theirs.group_id}
    assert await store.groups.group_state(mine.group_id) == "admitted"


async def test_what_a_reward_server_says_is_kept_as_postgres_can_hold_it(store, run_id):
    group = await admitted_and_generated(store, run_id)
    scored = ev.ScoredGroup(
        group=group,
        rewards=[1.0, 0.0],
        reward_server="x" * 300,
        details=[SampleScore(extracted_answer="4\x002", detail="ok\x00"), SampleScore()],
        calls=[ev.RewardCall(endpoint="judge:1", ok=False, error="bad\x00reply")],
    )
    assert await store.batches.record_scored(scored, "") == "scored"  # not a DataError for the whole fetch
    async with store.engine.connect() as conn:
        server, error = (
            await conn.execute(
                select(PromptGroup.reward_server, PromptGroup.reward_error).where(
                    PromptGroup.group_id == group.group_id
                )
            )
        ).one()
        answers = (await conn.execute(select(Reward.extracted_answer, Reward.server))).all()
    assert server == "x" * 128 and error == "judge:1: bad\ufffdreply"
    assert ("4\ufffd2", "x" * 128) in answers


async def test_evaluations_dead_letters_and_run_state(store, run_id):
    await store.reports.record_evaluation(run_id, 0, 50, 200)
    await store.reports.record_evaluation(run_id, 5, 120, 200)
    await store.reports.record_evaluation(run_id, 5, 1, 200)  # first write wins
    assert await store.reports.evaluations(run_id) == [(0, 50, 200, 0.25), (5, 120, 200, 0.6)]
    assert await store.reports.latest_evaluation(run_id) == (5, 0.6)
    other = f"{run_id}x"
    await store.runs.create_run(other, "test", "model: {path: /m}\n", 1, 1, G, "")
    for rid in (run_id, run_id, other):  # redelivered once; another run's letter with the same seq
        await store.reports.record_dead_letter(
            dead_letter_id(rid, 7), rid, f"jetrl.{rid}.rollouts", "not a valid Sample", b"\xff"
        )
    assert len(await store.reports.dead_letters(other)) == 1
    assert [d.reason for d in await store.reports.dead_letters(run_id)] == ["not a valid Sample"]
    assert (await store.reports.run_stats(run_id)).dead_letters == 1
    await store.runs.set_run_state(run_id, "COMPLETED", "done")
    record = await store.runs.get_run(run_id)
    assert (record.state, record.message) == ("COMPLETED", "done")
    assert run_id in [r.run_id for r in await store.runs.list_runs()]


async def test_every_endpoint_scores_a_sample_in_its_own_row_and_a_failure_is_recorded(store, run_id):
    group = await admitted_and_generated(store, run_id, 0)
    calls = [
        ev.RewardCall(endpoint="a:1", server="verify@1", weight=1.0, ok=True, rewards=[1.0, 0.0]),
        ev.RewardCall(endpoint="b:2", weight=0.5, ok=False, error="UNAVAILABLE: down", attempts=4, rewards=[0.0, 0.0]),
        ev.RewardCall(endpoint="c:3", server="majority@1", weight=0.5, ok=True, rewards=[1.0, 1.0]),
    ]
    state = await store.batches.record_scored(
        ev.ScoredGroup(group=group, rewards=[1.5, 0.5], reward_server="verify@1", reward_endpoint="a:1", calls=calls),
        "",
    )
    assert state == "scored"  # on_failure zero: kept, the dead endpoint's share is 0
    async with store.engine.connect() as conn:
        from sqlalchemy import select

        from jetrl.lineage.models import PromptGroup, Reward, Sample

        rows = sorted(
            (r.sample_id[-1], r.server, r.endpoint, r.reward)
            for r in await conn.execute(
                select(Reward).where(Reward.sample_id.in_([s.sample_id for s in group.samples]))
            )
        )
        assert rows == [
            ("0", "majority@1", "c:3", 1.0),
            ("0", "verify@1", "a:1", 1.0),
            ("1", "majority@1", "c:3", 1.0),
            ("1", "verify@1", "a:1", 0.0),
        ]
        assert sorted(
            (await conn.execute(select(Sample.reward).where(Sample.group_id == group.group_id))).scalars()
        ) == [0.5, 1.5]
        error = (
            await conn.execute(select(PromptGroup.reward_error).where(PromptGroup.group_id == group.group_id))
        ).scalar()
    assert error == "b:2: UNAVAILABLE: down"
    stats = await store.reports.run_stats(run_id)
    assert (stats.reward_failures, stats.last_reward_error) == (1, "b:2: UNAVAILABLE: down")
    dropped = await admitted_and_generated(store, run_id, 1)
    failed = ev.ScoredGroup(group=dropped, rewards=[1.0, 0.0], calls=calls)
    state = await store.batches.record_scored(
        failed, "", scored_state(failed, dynamic_sampling=False, drop_failed=True)
    )
    assert state == "dropped" and (await store.groups.group_counts(run_id))["dropped"] == 1


async def test_views_load_back_and_teacher_samples_get_no_reward(store, run_id):
    t = task(run_id, 0)
    await store.groups.admit_groups([NewGroup(t, "1", "", "", analogous="1+0=", problem=7)])
    views = [("main", 0), ("analogous", 1), ("teacher", 2), ("teacher", 3)]
    await store.samples.record_samples(
        [(ev.Sample(**{**_fields(sample(run_id, 0, i)), "view": v}), "") for v, i in views]
    )
    group = await store.samples.load_group(t.group_id)
    assert [(v.view, v.prompt, v.first_index, v.size, v.trained) for v in group.views] == [
        ("main", "0+1=", 0, 1, True),
        ("analogous", "1+0=", 1, 1, True),
        ("teacher", "0+1=", 2, 2, False),
    ]
    await store.batches.record_scored(
        ev.ScoredGroup(group=group, rewards=[1.0, 0.0, 0.0, 0.0], reward_server="x@1"), ""
    )
    assert await store.groups.prompt_evidence(run_id) == [(7, 0, 1, 1)]  # the two trained samples only
    await store.versions.record_teacher(run_id, 3)
    await store.versions.record_teacher(run_id, 2)  # late and older: ignored
    assert (await store.reports.run_stats(run_id)).teacher_version == 3


def _fields(message) -> dict:
    return {f.name: v for f, v in message.ListFields()}


async def test_a_version_whose_samples_gave_no_answer_has_no_top_answer(store, run_id):
    """ "No answer" is not one answer: samples that all fail to answer are no collapse onto one."""
    group = await admitted_and_generated(store, run_id)
    await store.groups.mark_groups([group.group_id], "generated")
    none = [SampleScore(extracted_answer="", detail="no answer")] * 2
    await store.batches.record_scored(ev.ScoredGroup(group=group, rewards=[0.0, 0.0], details=none), "")
    assert (await store.batches.seal_batch(run_id, 0, 1, f"{run_id}.b000000", 0)).groups
    advantages = [ev.SampleAdvantage(sample_id=s.sample_id) for s in group.samples]
    ann = ev.WeightsAnnouncement(run_id=run_id, version=1, parent_version=0, batch_id=f"{run_id}.b000000")
    ann.advantages.extend(advantages)
    await store.versions.record_version(ann, "")
    [point] = await store.reports.version_points(run_id)
    assert point.top_answer_share is None


async def test_version_points_reads_its_own_runs_rewards_by_key(store, run_id):
    """`version_points` runs on every version and on every progress update a watcher gets. It joined
    the rewards of every run in the database, and with statistics behind the rows (mid-run, or
    autovacuum off) Postgres read them all: 20 ms a call once the database held 33,000 rewards,
    growing with every run kept. The rewards of the run's samples are now looked up by key."""
    other = f"r{uuid.uuid4().hex[:8]}"
    await store.runs.create_run(other, "test", "", total_steps=3, batch_groups=1, group_size=G, trace_id="")
    await admitted_and_generated(store, other)
    group = await admitted_and_generated(store, run_id)
    # another run's 20,000 scored samples, and 1,000 more of this run's trained by version 1, as
    # a few versions of a real run make: statistics left behind
    async with store.engine.begin() as conn:
        for run, group_of, count, trained in (
            (other, f"{other}.g000000", 20000, None),
            (run_id, group.group_id, 1000, 1),
        ):
            await insert_samples(
                conn,
                "generate_series(1, :count) AS i",
                {"run": run, "group": group_of, "count": count, "trained": trained},
                sample_id=":group || '.x' || i",
                run_id=":run",
                group_id=":group",
                index="0",
                trained=":trained",
            )
            await conn.execute(
                text(
                    "INSERT INTO rewards (sample_id, server, endpoint, reward, extracted_answer, detail, trace_id)"
                    " SELECT sample_id, 'verify@1', '', 0.5, '2', '', '' FROM samples"
                    " WHERE run_id = :run AND sample_id LIKE '%.x%'"
                ),
                {"run": run},
            )
    await store.groups.mark_groups([group.group_id], "generated")
    answers = [SampleScore(extracted_answer="1"), SampleScore(extracted_answer="3")]
    await store.batches.record_scored(ev.ScoredGroup(group=group, rewards=[1.0, 0.0], details=answers), "")
    assert (await store.batches.seal_batch(run_id, 0, 1, f"{run_id}.b000000", 0)).groups
    ann = ev.WeightsAnnouncement(run_id=run_id, version=1, parent_version=0, batch_id=f"{run_id}.b000000")
    ann.advantages.extend(ev.SampleAdvantage(sample_id=s.sample_id) for s in group.samples)
    await store.versions.record_version(ann, "")
    async with store.engine.begin() as conn:
        # whatever join Postgres picks: with nested loops off it must pick one that reads the whole
        # inner side, so only a query that looks rewards up per sample reads just this run's
        await conn.execute(text("SET LOCAL enable_nestloop = off"))
        plan = await explain_analyze(conn, version_points_statement(run_id, 1))
    read = rows_read(plan, "rewards")
    assert read <= 1002, f"read {read} reward rows for a run that has 1,002"
    [point] = await store.reports.version_points(run_id)
    assert (point.version, point.mean_reward, point.top_answer_share) == (1, 0.5, 1000 / 1002)


async def test_token_arrays_are_written_as_literals_and_read_back_exactly(store, run_id):
    """Token ids and log-probs go to Postgres as array literals (NumberArray): every float keeps
    its value, the tiny, the huge and the float32 ones the protos carry."""
    await store.groups.admit_groups([NewGroup(task(run_id, 0), "1")])
    logprobs = [-1e-300, -0.1, -123456.789, -0.0, -3.4028234663852886e38]
    odd = sample_event(
        run_id,
        f"{run_id}.g000000",
        0,
        prompt_token_ids=[0, 2**31 - 1],
        completion_token_ids=[7, 8, 9, 10, 2],
        logprobs=logprobs,
        token_versions=[0, 1, 2, 3, 4],
    )
    await store.samples.record_samples([(odd, "")])
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(Sample).where(Sample.sample_id == odd.sample_id))).one()
    assert row.logprobs == list(odd.logprobs)  # the float32 values the message holds, to the bit
    assert (row.prompt_token_ids, row.completion_token_ids, row.token_versions) == (
        [0, 2**31 - 1],
        [7, 8, 9, 10, 2],
        [0, 1, 2, 3, 4],
    )


@pytest.mark.parametrize("calls", [("verify@1", "majority@1"), ("majority@1", "verify@1")])
async def test_a_batch_scored_by_two_servers_reads_back_the_same_whatever_the_plan(store, run_id, calls):
    """The trainer checks a batch against the digest lineage gives (GetBatchDigest after a restart
    reads it back), so `load_batch` must read the same batch whichever join Postgres picks: a
    group's reward server is the one the reward stage named first, not whichever of a sample's
    reward rows a plan returns last."""
    from jetrl.digest import batch_digest
    from jetrl.lineage.role import lending

    group = await admitted_and_generated(store, run_id, 0)
    first, second = calls
    await store.batches.record_scored(
        ev.ScoredGroup(
            group=group,
            rewards=[1.5, 0.5],
            reward_server=first,
            reward_endpoint="a:1",
            calls=[
                ev.RewardCall(endpoint="a:1", server=first, weight=1.0, ok=True, rewards=[1.0, 0.0]),
                ev.RewardCall(endpoint="c:3", server=second, weight=0.5, ok=True, rewards=[1.0, 1.0]),
            ],
        ),
        "",
    )
    batch_id = f"{run_id}.b000000"
    assert (await store.batches.seal_batch(run_id, 0, 1, batch_id, 0)).groups
    read = {}
    for plan in ("enable_hashjoin", "enable_nestloop"):  # each turned off in turn: the other join is used
        async with lending(store.engine):
            async with store.runs.connect() as conn:
                await conn.execute(text(f"SET {plan} = off; SET enable_mergejoin = off"))
            try:
                read[plan] = await store.batches.load_batch(batch_id)
            finally:
                async with store.runs.connect() as conn:
                    await conn.execute(text("RESET ALL"))
    assert batch_digest(read["enable_hashjoin"]) == batch_digest(read["enable_nestloop"])
    assert {b.groups[0].reward_server for b in read.values()} == {first}


async def test_a_batch_built_from_the_recorded_events_is_the_batch_lineage_reads_back(store, run_id):
    """jetrl.lineage.sealed: the scheduler publishes a batch built from the groups it published and
    the scored events lineage recorded; it must be, field for field, what load_batch reads back
    (the digest the trainer checks after a restart, the lineage of what was trained)."""
    from jetrl.digest import batch_digest
    from jetrl.lineage.sealed import sealed_batch

    groups = [await admitted_and_generated(store, run_id, n) for n in range(3)]
    t = task(run_id, 3)
    await store.groups.admit_groups([NewGroup(t, "4", "", "", analogous="1+3=")])
    views = [("main", 0), ("analogous", 1), ("teacher", 2), ("teacher", 3)]
    await store.samples.record_samples(
        [(ev.Sample(**{**_fields(sample(run_id, 3, i)), "view": v}), "") for v, i in views]
    )
    groups.append(await store.samples.load_group(t.group_id))

    def call(endpoint, server, rewards, ok=True):
        return ev.RewardCall(endpoint=endpoint, server=server, weight=1.0, ok=ok, rewards=rewards)

    events = [
        ev.ScoredGroup(  # one server; what it said needs cleaning to be kept
            group=groups[0],
            rewards=[1.0, -0.0],
            details=[SampleScore(extracted_answer="1\x00", detail="x" * 5000), SampleScore(detail="no answer")],
            reward_server="verify@1",
            calls=[call("a:1", "verify@1", [1.0, -0.0])],
        ),
        ev.ScoredGroup(  # two servers, named out of their order by name, and one that failed
            group=groups[1],
            rewards=[1.5, 0.5],
            reward_server="verify@1",
            calls=[
                call("a:1", "verify@1", [1.0, 0.0]),
                call("b:2", "", [0.0, 0.0], ok=False),
                call("c:3", "majority@1", [0.5, 0.5]),
            ],
        ),
        ev.ScoredGroup(group=groups[2], rewards=[0.0, 0.0], calls=[call("a:1", "", [0.0, 0.0], ok=False)]),
        ev.ScoredGroup(group=groups[3], rewards=[1.0, 0.0, 0.0, 0.0], reward_server="x@1"),  # teacher samples
    ]
    recorded = await store.batches.record_scored_groups([Scored(e) for e in events])
    assert recorded.moved == {g.group_id for g in groups}
    batch_id = f"{run_id}.b000000"
    assert (await store.batches.seal_batch(run_id, 0, 4, batch_id, 0)).groups == [g.group_id for g in groups]
    built = sealed_batch(run_id, batch_id, 0, list(zip(groups, events)))
    read = await store.batches.load_batch(batch_id)
    assert built == read, (built, read)
    assert batch_digest(built) == batch_digest(read)
    # redelivered: lineage keeps the first rewards, and says these are not them
    again = await store.batches.record_scored_groups([Scored(e) for e in events])
    assert again.moved == set()
