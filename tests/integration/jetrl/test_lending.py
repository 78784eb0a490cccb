"""`lending` (jetrl/lineage/role.py) on a real Postgres: the store calls of one handling share one
connection, each still a transaction of its own, and nothing about errors, concurrency or a
server that went away changes for its callers."""

import asyncio
import uuid

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from jetrl.lineage.db import make_engine
from jetrl.lineage.role import lending
from jetrl.lineage.store import LineageStore
from jetrl.states import RunState


@pytest.fixture
async def store(database_url):
    engine = make_engine(database_url)
    yield LineageStore(engine)
    await engine.dispose()


def checkouts(store: LineageStore) -> list[int]:
    """A counter of the pool's checkouts from now on."""
    seen = [0]
    event.listen(store.engine.sync_engine.pool, "checkout", lambda *_: seen.__setitem__(0, seen[0] + 1))
    return seen


async def new_run(store: LineageStore) -> str:
    run_id = f"r{uuid.uuid4().hex[:8]}"
    await store.runs.create_run(run_id, "t", "", total_steps=3, batch_groups=1, group_size=2, trace_id="")
    return run_id


async def test_calls_in_a_lending_block_check_out_one_connection_and_commit_each(store, database_url):
    run_id = await new_run(store)
    seen = checkouts(store)
    async with lending(store.engine):
        await store.runs.set_run_state(run_id, RunState.RUNNING, "first")
        # committed when the call returned: another connection reads it at once
        other = make_engine(database_url)
        try:
            async with other.connect() as conn:
                read = await conn.execute(text("SELECT message FROM runs WHERE run_id = :r"), {"r": run_id})
                message = read.scalar()
        finally:
            await other.dispose()
        assert message == "first"
        assert (await store.runs.get_run(run_id)).message == "first"
        await store.groups.group_counts(run_id)
        await store.batches.batches_sealed(run_id)
    assert seen[0] == 1
    await store.runs.get_run(run_id)  # after the block: the pool again
    assert seen[0] == 2


async def test_a_failed_call_is_rolled_back_and_the_next_one_goes_on(store):
    run_id = await new_run(store)
    async with lending(store.engine):
        with pytest.raises(RuntimeError):
            async with store.runs.begin() as conn:
                await conn.execute(text("UPDATE runs SET message = 'half' WHERE run_id = :r"), {"r": run_id})
                raise RuntimeError("the handler failed mid-transaction")
        with pytest.raises(DBAPIError):
            await store.runs.rows(text("SELECT no_such_column FROM runs"))
        assert (await store.runs.get_run(run_id)).message == ""
        await store.runs.set_run_state(run_id, RunState.RUNNING, "after")
        # the reads above ran in autocommit: a write after them is a transaction again
        with pytest.raises(RuntimeError):
            async with store.runs.begin() as conn:
                await conn.execute(text("UPDATE runs SET message = 'half' WHERE run_id = :r"), {"r": run_id})
                raise RuntimeError("failed again")
    assert (await store.runs.get_run(run_id)).message == "after"


@pytest.mark.parametrize("lent", [True, False])
async def test_a_read_is_no_transaction_each_statement_is_its_own(store, lent):
    """A read's BEGIN and ROLLBACK are two round trips that buy nothing at READ COMMITTED: each
    statement of a read sees its own snapshot either way."""

    async def read_twice() -> tuple:
        async with store.runs.connect() as conn:
            first = (await conn.execute(text("SELECT now(), pg_sleep(0.01)"))).scalar()
            second = (await conn.execute(text("SELECT now()"))).scalar()
            return first, second

    if lent:
        async with lending(store.engine):
            first, second = await read_twice()
    else:
        first, second = await read_twice()
    assert second > first  # now() is the start of the transaction: two, so no BEGIN held them


async def test_calls_running_side_by_side_and_after_the_block_use_the_pool(store):
    run_id = await new_run(store)
    seen = checkouts(store)
    late: list[asyncio.Task] = []
    async with lending(store.engine):
        # a task started in the block shares its context, so its lent connection: it must not use it
        # while another call holds it, nor once the block has returned it
        runs = await asyncio.gather(*(store.runs.get_run(run_id) for _ in range(4)))
        assert all(r.run_id == run_id for r in runs)

        async def after_the_block():
            await asyncio.sleep(0.05)
            return await store.runs.get_run(run_id)

        late.append(asyncio.create_task(after_the_block()))
    assert (await late[0]).run_id == run_id
    assert 2 <= seen[0] <= 5  # the lent one, at least one from the pool beside it, then the late one's


async def test_a_lent_connection_the_server_dropped_fails_one_call_then_reconnects(store):
    run_id = await new_run(store)
    async with lending(store.engine):
        pid = (await store.runs.rows(text("SELECT pg_backend_pid()")))[0][0]
        async with store.engine.connect() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError):
            await store.runs.get_run(run_id)  # as on a pooled connection the outage broke mid-use
        assert (await store.runs.get_run(run_id)).run_id == run_id
        assert (await store.runs.rows(text("SELECT pg_backend_pid()")))[0][0] != pid
