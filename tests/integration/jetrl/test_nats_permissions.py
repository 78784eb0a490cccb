"""Who may publish what, against a real nats-server run with the rendered users (jetrl/bus/permissions.py).

Each role can do what its service does: check the layout, publish its own kinds and dead letters,
fetch from and ack its durable consumers, follow its broadcast kinds. And nothing else: publishing
another role's kind, fetching or acking another's consumer, following a kind it does not follow,
creating or changing a stream or a durable consumer, reading another role's replies. A refusal
fails at once with PermissionDenied naming the user, the subject and what to do.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import nats.errors
import pytest

from jetrl.bus import (
    CONSUMERS,
    BusUnreachable,
    ConsumerSpec,
    Kind,
    connect,
    declare,
    follow,
    publish,
    stream_name,
    subject,
)
from jetrl.bus.credentials import ensure_passwords, server_env
from jetrl.bus.permissions import ADMIN, ROLES, render_authorization
from jetrl.bus.refusals import BusClient, PermissionDenied
from jetrl.config import Settings
from jetrl.localstack import free_port, start_nats_server, stop_process

BROADCASTS = (Kind.WEIGHTS, Kind.TEACHER, Kind.CONTROL)
RUN = "run1"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A nats-server with every user, as `jetrl up` starts it; (url, passwords)."""
    root = tmp_path_factory.mktemp("nats-auth")
    passwords = ensure_passwords(root / "passwords.env")
    (root / "auth.conf").write_text(render_authorization())
    port = free_port()
    proc = start_nats_server(port, root / "js", auth=(root / "auth.conf", server_env(passwords)))
    yield f"nats://127.0.0.1:{port}", passwords
    stop_process(proc)


async def _as(broker, user: str) -> BusClient:
    url, passwords = broker
    return await connect(Settings(nats_url=url, nats_user=user, nats_password=passwords[user]), f"test-{user}")


@pytest.fixture(scope="module")
async def admin(broker):
    """The admin's client, the layout declared (as `jetrl up` and the deploy jobs do)."""
    nc = await _as(broker, ADMIN)
    await declare(nc.jetstream(), replicas=1)
    yield nc
    await nc.close()


@pytest.fixture(scope="module")
async def clients(broker, admin):
    """role -> its client."""
    connected = {role: await _as(broker, role) for role in ROLES}
    yield connected
    for nc in connected.values():
        await nc.close()


async def test_every_role_finds_the_declared_layout_without_writing(clients):
    for nc in clients.values():
        await declare(nc.jetstream(), replicas=1)  # reads only: a write would be refused


async def test_a_role_may_not_declare_and_is_told_who_must(broker, admin):
    """A layout that is not as this version declares it: a service's declare is refused at once
    (not timed out), saying what differs and who declares."""
    nc = await _as(broker, "reward")
    try:
        with pytest.raises(PermissionDenied) as refused:
            # the reward stage's consumer as a later version might declare it
            later = (ConsumerSpec("reward-stage", Kind.GROUPS, 99.0),)
            await asyncio.wait_for(declare(nc.jetstream(), later, replicas=1), 3)
    finally:
        await nc.close()
    text = str(refused.value)
    assert text.startswith("test-reward (NATS user 'reward'): NATS refused to let it publish to '$JS.API.")
    assert "jetrl nats declare" in text and "JETRL_GROUPS/reward-stage.ack_wait" in text


@pytest.mark.parametrize("role", ROLES)
async def test_a_role_publishes_its_own_kinds_and_dead_letters_only(clients, role):
    js = clients[role].jetstream()
    allowed = ROLES[role].may_publish()
    for kind in Kind:
        publish = js.publish(subject(RUN, kind), b"x", headers={"Nats-Msg-Id": uuid.uuid4().hex})
        if kind in allowed:
            assert (await asyncio.wait_for(publish, 3)).stream == stream_name(kind), (role, kind)
        else:
            with pytest.raises(PermissionDenied, match=f"publish to '{subject(RUN, kind)}'"):
                await asyncio.wait_for(publish, 3)  # at once: no timeout
    assert allowed - {Kind.DLQ} == ROLES[role].publishes


def test_nobody_but_the_trainer_publishes_weights_and_only_the_scheduler_controls():
    for kinds, owner in (({Kind.WEIGHTS, Kind.TEACHER}, "trainer"), ({Kind.CONTROL, Kind.BATCHES}, "scheduler")):
        assert [r for r in ROLES.values() if kinds & r.may_publish()] == [ROLES[owner]]


@pytest.mark.parametrize("role", ROLES)
async def test_a_role_fetches_and_acks_its_own_durable_consumers_only(admin, clients, role):
    nc = clients[role]
    for spec in CONSUMERS:
        await admin.jetstream().publish(
            subject(RUN, spec.kind), b"x", headers={"Nats-Msg-Id": f"{role}-{spec.name}-{uuid.uuid4().hex}"}
        )
        sub = await nc.jetstream().pull_subscribe_bind(durable=spec.name, stream=spec.stream)
        try:
            if spec in ROLES[role].consumes:
                [msg] = await sub.fetch(1, timeout=3)
                await msg.ack_sync()  # the server confirms it: allowed
            else:
                with pytest.raises(nats.errors.TimeoutError):
                    await sub.fetch(1, timeout=0.2)
                assert nc.was_refused(spec.fetch_subject), (role, spec.name)
        finally:
            await sub.unsubscribe()
    # what an admin fetched from another role's consumer cannot be acked by this role
    other = next(s for s in CONSUMERS if s not in ROLES[role].consumes)
    await admin.jetstream().publish(subject(RUN, other.kind), b"x", headers={"Nats-Msg-Id": uuid.uuid4().hex})
    sub = await admin.jetstream().pull_subscribe_bind(durable=other.name, stream=other.stream)
    [msg] = await sub.fetch(1, timeout=3)
    with pytest.raises(PermissionDenied):
        await nc.request(msg.reply, b"", timeout=3)
    await msg.ack()
    await sub.unsubscribe()


@pytest.mark.parametrize("role", ROLES)
async def test_a_role_follows_its_broadcast_kinds_only(admin, clients, make_event, role):
    for kind in BROADCASTS:
        await publish(admin.jetstream(), RUN, kind, make_event(kind, RUN), msg_id=uuid.uuid4().hex)
        stop = asyncio.Event()

        async def handler(event, delivery, stop=stop):
            stop.set()

        following = follow(clients[role].jetstream(), kind, handler, stop, fetch_timeout=0.2)
        if kind in ROLES[role].follows:
            await asyncio.wait_for(following, 5)  # returns once the handler saw the event
        else:
            with pytest.raises(PermissionDenied, match=rf"\$JS.API.CONSUMER.CREATE.{stream_name(kind)}'"):
                await asyncio.wait_for(following, 3)


@pytest.mark.parametrize("role", ROLES)
async def test_a_role_may_not_change_the_layout(clients, role):
    nc = clients[role]
    jsm = nc.jetstream()
    with pytest.raises(PermissionDenied):
        await jsm.delete_stream(stream_name(Kind.WEIGHTS))
    with pytest.raises(PermissionDenied):
        await jsm.purge_stream(stream_name(Kind.BATCHES))
    with pytest.raises(PermissionDenied):
        await jsm.delete_consumer(stream_name(Kind.CONTROL), "scheduler-control")
    # the subject an ordered consumer is created on cannot make or change a durable one
    if Kind.CONTROL in ROLES[role].follows:
        config = {"durable_name": "scheduler-control", "ack_policy": "none"}
        request = json.dumps({"stream_name": "JETRL_CONTROL", "config": config}).encode()
        reply = json.loads((await nc.request("$JS.API.CONSUMER.CREATE.JETRL_CONTROL", request, 3)).data)
        assert "error" in reply, reply


@pytest.mark.parametrize("role", ROLES)
async def test_a_role_reads_no_bus_subject_and_no_other_roles_replies(clients, role):
    nc = clients[role]
    other = next(r for r in ROLES if r != role)
    for subj in ("jetrl.>", f"jetrl.{RUN}.batches", f"_INBOX.{other}.>", "_INBOX.>"):
        await nc.subscribe(subj)
        await nc.flush()
        for _ in range(50):
            if nc.was_refused(subj):
                break
            await asyncio.sleep(0.02)
        assert nc.was_refused(subj), (role, subj)


async def test_a_refusal_says_which_role_and_what_to_do(broker):
    """A service connected as another role's user is told which user it should be."""
    url, passwords = broker
    nc = await connect(Settings(nats_url=url, nats_user="reward", nats_password=passwords["reward"]), "svc_trainer")
    try:
        with pytest.raises(PermissionDenied) as refused:
            await nc.jetstream().publish(subject(RUN, Kind.WEIGHTS), b"x")
    finally:
        await nc.close()
    assert str(refused.value) == (
        "svc_trainer (NATS user 'reward'): NATS refused to let it publish to 'jetrl.run1.weights'; it is the "
        "'trainer' role: connect it as that user (JETRL_NATS_USER=trainer and its password)"
    )


async def test_an_outdated_config_is_named(broker):
    nc = await _as(broker, "rollout")
    try:
        with pytest.raises(PermissionDenied, match="regenerate it .`jetrl nats config`"):
            await nc.jetstream().publish(subject(RUN, Kind.TASKS), b"x")
    finally:
        await nc.close()


async def test_a_wrong_password_is_refused(broker):
    url, _ = broker
    # the server answers -ERR 'Authorization Violation' and closes; a loaded client may read the close first
    with pytest.raises(BusUnreachable, match="(?i)authorization|connection reset"):
        await connect(Settings(nats_url=url, nats_user="trainer", nats_password="jetrl-wrong"), "test", timeout=2)
