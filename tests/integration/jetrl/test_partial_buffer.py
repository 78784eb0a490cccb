"""APRIL's partial buffer on a real Postgres: nothing handed back is lost, resumes are token-in."""

import uuid

import pytest

from jetrl.lineage.buffer import PartialBuffer
from jetrl.lineage.db import make_engine
from jetrl.lineage.groups import NewGroup
from jetrl.lineage.samples import GroupProgress
from jetrl.lineage.store import LineageStore
from jetrl.v1 import events_pb2 as ev
from sample_events import sample_event

G = 3


@pytest.fixture
async def stores(database_url):
    engine = make_engine(database_url)
    yield LineageStore(engine), PartialBuffer(engine)
    await engine.dispose()


@pytest.fixture
async def group(stores):
    store, _ = stores
    run_id = f"r{uuid.uuid4().hex[:8]}"
    await store.runs.create_run(
        run_id, "test", "model: {path: /m}\n", total_steps=3, batch_groups=1, group_size=G, trace_id=""
    )
    task = ev.Task(
        run_id=run_id,
        group_id=f"{run_id}.g000000",
        prompt_id="p0",
        prompt="1+1=",
        prompt_token_ids=[5, 6],
        num_samples=G,
        policy_version=2,
    )
    await store.groups.admit_groups([NewGroup(task, "2", "", "")])
    return run_id, task.group_id


def sample(run_id, group_id, index, tokens, versions, *, attempt=0, prefix_len=0, reason="aborted", worker="w1"):
    return sample_event(
        run_id,
        group_id,
        index,
        completion_token_ids=tokens,
        logprobs=[-0.5] * len(tokens),
        token_versions=versions,
        finish_reason=reason,
        worker_id=worker,
        attempt=attempt,
        prefix_len=prefix_len,
    )


async def test_an_aborted_group_resumes_token_in_once_every_sample_is_accounted(stores, group):
    store, buffer = stores
    run_id, gid = group
    assert await buffer.abort(run_id, [gid]) == [(gid, 0)]
    assert await buffer.abort(run_id, [gid]) == []  # already in the buffer
    # sample 0 finished before the abort reached the worker; 1 and 2 are handed back
    got = await store.samples.record_samples(
        [(sample(run_id, gid, 0, [7, 2], [2, 2], reason="eos"), ""), (sample(run_id, gid, 1, [8, 9], [2, 2]), "")]
    )
    assert got == {(gid, run_id): GroupProgress(1, "partial", False)}
    assert await buffer.resume(run_id, 10, 3, None) == []  # sample 2 is still on its way
    got = await store.samples.record_samples([(sample(run_id, gid, 2, [], []), "")])  # aborted before its first token
    assert got == {(gid, run_id): GroupProgress(1, "partial", True)}
    assert await buffer.size(run_id) == 1
    assert await buffer.resume(run_id, 0, 3, None) == []  # no slot: nothing moves
    assert await store.groups.group_state(gid) == "partial"

    [resumed] = await buffer.resume(run_id, 10, 3, None)
    assert (resumed.attempt, resumed.version, resumed.dropped) == (1, 3, 0)
    assert [(p.index, list(p.token_ids), list(p.token_versions)) for p in resumed.prefixes] == [
        (1, [8, 9], [2, 2]),
        (2, [], []),
    ]
    assert await store.groups.group_state(gid) == "admitted" and await buffer.resume(run_id, 10, 3, None) == []
    # a restarted scheduler re-publishes exactly the same attempt
    again = await buffer.current(gid)
    assert (again.attempt, again.prefixes) == (1, resumed.prefixes)

    # attempt 1 finishes both; sample 1 has tokens from two versions and two segments
    got = await store.samples.record_samples(
        [
            (
                sample(run_id, gid, 1, [8, 9, 4, 2], [2, 2, 3, 3], attempt=1, prefix_len=2, reason="eos", worker="w2"),
                "",
            ),
            (sample(run_id, gid, 2, [4, 2], [3, 3], attempt=1, reason="eos"), ""),
        ]
    )
    assert got[(gid, run_id)].complete == G
    loaded = await store.samples.load_group(gid)
    assert list(loaded.samples[1].completion_token_ids) == [8, 9, 4, 2]
    assert list(loaded.samples[1].token_versions) == [2, 2, 3, 3]
    # the trainer learns which tokens were recycled (schedule.recycled_staleness bounds them):
    # sample 0 whole (finished by the aborted attempt, carried into the next), 1's first two
    assert [s.prefix_len for s in loaded.samples] == [2, 2, 0]
    segments = [
        (s.attempt, s.worker_id, s.start, s.end, s.min_version, s.max_version, s.finish_reason)
        for s in await store.reports.segments(f"{gid}.1")
    ]
    assert segments == [(0, "w1", 0, 2, 2, 2, "aborted"), (1, "w2", 2, 4, 3, 3, "eos")]


async def test_regenerate_drops_a_stale_prefix_and_lineage_says_so(stores, group):
    store, buffer = stores
    run_id, gid = group
    await buffer.abort(run_id, [gid])
    await store.samples.record_samples(
        [(sample(run_id, gid, i, [8, 9], [1, 2]), "") for i in range(G - 1)]
        + [(sample(run_id, gid, G - 1, [8, 9], [2, 2]), "")]
    )
    [resumed] = await buffer.resume(run_id, 1, 4, stale_before=2)  # a token of version 1 would be too old
    assert resumed.dropped == G - 1
    assert [len(p.token_ids) for p in resumed.prefixes] == [0] * (G - 1) + [2]
    assert [len(p.token_ids) for p in (await buffer.current(gid)).prefixes] == [0] * (G - 1) + [2]
    assert [s.finish_reason for s in await store.reports.segments(f"{gid}.0")] == ["dropped"]
    await store.samples.record_samples([(sample(run_id, gid, 0, [4, 2], [4, 4], attempt=1, reason="eos"), "")])
    [row] = [r for r in (await store.samples.load_group(gid)).samples]
    assert list(row.token_versions) == [4, 4]


async def test_one_resume_starts_the_oldest_accounted_groups_up_to_the_slots(stores, group):
    """Admission resumes every buffered group it has slots for in one transaction, oldest first;
    a group whose partials are not all in yet waits, and does not take a slot."""
    store, buffer = stores
    run_id, _ = group
    later = [
        ev.Task(
            run_id=run_id,
            group_id=f"{run_id}.g{n:06d}",
            prompt_id=f"p{n}",
            prompt="1+1=",
            prompt_token_ids=[5, 6],
            num_samples=G,
            policy_version=2,
        )
        for n in (1, 2, 3)
    ]
    await store.groups.admit_groups([NewGroup(t, "2", "", "") for t in later])
    gids = [f"{run_id}.g{n:06d}" for n in range(4)]
    assert sorted(g for g, _ in await buffer.abort(run_id, gids)) == gids  # UPDATE … RETURNING: in no order
    # every group but g000001 hands back all its samples
    await store.samples.record_samples(
        [(sample(run_id, g, i, [8], [2]), "") for g in gids for i in range(G) if g != gids[1]]
        + [(sample(run_id, gids[1], 0, [8], [2]), "")]
    )
    resumed = await buffer.resume(run_id, 2, 3, None)
    assert [(r.n, r.attempt, r.version) for r in resumed] == [(0, 1, 3), (2, 1, 3)]
    assert [await store.groups.group_state(g) for g in gids] == ["admitted", "partial", "admitted", "partial"]
    assert [[list(p.token_ids) for p in r.prefixes] for r in resumed] == [[[8]] * G] * 2
