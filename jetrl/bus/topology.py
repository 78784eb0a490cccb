"""Subjects, streams and durable consumers: the one place the bus layout is declared.

Every event kind has its own subject per run (`jetrl.<run>.<kind>`) and its own stream holding
that kind for all runs. Work kinds (tasks, groups, batches, evals) live in work-queue streams consumed
by one shared durable consumer, so replicas split the work and an acked message is gone;
the other kinds are kept (limits retention) so the scheduler's recorder and late followers
can read them.

Every stream has `Settings.stream_replicas` replicas (JETRL_STREAM_REPLICAS): 1 on a single server,
3 on a 3-node cluster (deploy/k8s); each durable consumer is declared with as many as its stream has.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from dataclasses import dataclass
from enum import StrEnum

from google.protobuf.message import Message
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from jetrl.bus.refusals import PermissionDenied
from jetrl.logs import log_fields
from jetrl.v1 import events_pb2

log = logging.getLogger(__name__)

PREFIX = "jetrl"
DUPLICATE_WINDOW_S = 3600.0
MAX_MSG_SIZE = 8 * 1024 * 1024
# JetStream error code for "stream name already in use with a different configuration"
_STREAM_NAME_IN_USE = 10058
_EXCEEDS_STREAM_REPLICAS = 10126  # a consumer with more replicas than its stream has (yet)
# a run id is one subject token and one directory name: no '.', '*', '>', whitespace, '/', '\\' or NUL
_BAD_RUN_ID = re.compile(r"[.*>\s/\\\x00]")


class Kind(StrEnum):
    TASKS = "tasks"
    ROLLOUTS = "rollouts"
    GROUPS = "groups"
    SCORED = "scored"
    BATCHES = "batches"
    WEIGHTS = "weights"
    TEACHER = "teacher"  # the EMA teacher's weights (Co-rewarding-II): a second weight stream
    CONTROL = "control"
    EVALS = "evals"  # held-out evaluation requests: any live rollout worker takes one
    EVALUATED = "evaluated"  # their results, recorded by the scheduler
    DLQ = "dlq"


MESSAGE_TYPES: dict[Kind, type[Message]] = {
    Kind.TASKS: events_pb2.Task,
    Kind.ROLLOUTS: events_pb2.Rollout,
    Kind.GROUPS: events_pb2.PromptGroup,
    Kind.SCORED: events_pb2.ScoredGroup,
    Kind.BATCHES: events_pb2.Batch,
    Kind.WEIGHTS: events_pb2.WeightsAnnouncement,
    Kind.TEACHER: events_pb2.WeightsAnnouncement,
    Kind.CONTROL: events_pb2.Control,
    Kind.EVALS: events_pb2.EvalRequest,
    Kind.EVALUATED: events_pb2.Evaluation,
}

WORK_QUEUES = frozenset({Kind.TASKS, Kind.GROUPS, Kind.BATCHES, Kind.EVALS})


def check_run_id(run_id: str) -> str:
    """The run id if it can be one subject token; ValueError otherwise."""
    if not run_id or _BAD_RUN_ID.search(run_id):
        raise ValueError(
            f"run id {run_id!r} cannot be a NATS subject token and a directory name (empty, or has "
            "'.', '*', '>', whitespace, '/', '\\' or NUL)"
        )
    return run_id


def subject(run_id: str, kind: Kind | str) -> str:
    return f"{PREFIX}.{check_run_id(run_id)}.{Kind(kind)}"


def parse_subject(value: str) -> tuple[str, Kind]:
    """(run_id, kind) of a `jetrl.<run>.<kind>` subject; ValueError for anything else."""
    parts = value.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise ValueError(f"{value!r} is not a jetrl subject (jetrl.<run>.<kind>)")
    try:
        kind = Kind(parts[2])
    except ValueError:
        raise ValueError(f"{value!r} has unknown event kind {parts[2]!r}") from None
    return check_run_id(parts[1]), kind


def stream_name(kind: Kind | str) -> str:
    return f"JETRL_{Kind(kind).upper()}"


async def subjects_in_use(js: JetStreamContext, run_id: str) -> list[str]:
    """The subjects of `run_id` that hold messages. Events published under a run id before the
    run exists may hold message ids the run will need (JetStream would drop its own events under
    them as duplicates), so a new run may not take such an id."""
    infos = await asyncio.gather(
        *(js.stream_info(stream_name(kind), subjects_filter=subject(run_id, kind)) for kind in Kind)
    )
    return sorted(name for info in infos for name in (info.state.subjects or {}))


def stream_config(kind: Kind, replicas: int = 1) -> StreamConfig:
    """The stream of one kind, with `replicas` copies (on as many servers of a cluster)."""
    return StreamConfig(
        name=stream_name(kind),
        subjects=[f"{PREFIX}.*.{kind}"],
        retention=RetentionPolicy.WORK_QUEUE if kind in WORK_QUEUES else RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_msg_size=MAX_MSG_SIZE,
        num_replicas=replicas,
    )


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer over one kind's stream (all runs).

    `max_failures`: handler failures after which a message is dead-lettered (jetrl.bus.retry
    counts them; waits and outages do not count, so JetStream's own max_deliver stays unlimited).
    """

    name: str
    kind: Kind
    ack_wait_s: float
    max_failures: int = 5

    @property
    def stream(self) -> str:
        return stream_name(self.kind)

    @property
    def fetch_subject(self) -> str:
        """The JetStream API subject a pull fetch from this consumer is published to."""
        return f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.name}"

    def config(self, replicas: int) -> ConsumerConfig:
        """`replicas`: its stream's. Given, not inherited: a consumer created while its stream had 1
        replica is not always raised with the stream, and stays on the one server it was made on."""
        # no filter subject: the stream holds exactly this kind, and nats-py would put a
        # wildcard filter into the API subject, which the server cannot route
        return ConsumerConfig(
            name=self.name,
            durable_name=self.name,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s,
            max_deliver=-1,
            num_replicas=replicas,
        )


# Ack waits are short so that the work of a killed replica comes back quickly; consume() sends
# in-progress acks every third of the wait, so a long generation or training step is kept alive.
# What a killed scheduler had fetched comes back to the new one after its ack wait.
SCHEDULER_ACK_WAIT_S = 10.0
ROLLOUT_WORKERS = ConsumerSpec("rollout-workers", Kind.TASKS, ack_wait_s=15.0)
REWARD_STAGE = ConsumerSpec("reward-stage", Kind.GROUPS, ack_wait_s=15.0)
TRAINER = ConsumerSpec("trainer", Kind.BATCHES, ack_wait_s=15.0)
SCHEDULER_ROLLOUTS = ConsumerSpec("scheduler-rollouts", Kind.ROLLOUTS, ack_wait_s=SCHEDULER_ACK_WAIT_S)
SCHEDULER_SCORED = ConsumerSpec("scheduler-scored", Kind.SCORED, ack_wait_s=SCHEDULER_ACK_WAIT_S)
SCHEDULER_WEIGHTS = ConsumerSpec("scheduler-weights", Kind.WEIGHTS, ack_wait_s=SCHEDULER_ACK_WAIT_S)
SCHEDULER_TEACHER = ConsumerSpec("scheduler-teacher", Kind.TEACHER, ack_wait_s=SCHEDULER_ACK_WAIT_S)
# control events are broadcast to every worker by follow(); this durable one audits them (a
# malformed one is dead-lettered) and carries out a STOP published by an operator
SCHEDULER_CONTROL = ConsumerSpec("scheduler-control", Kind.CONTROL, ack_wait_s=SCHEDULER_ACK_WAIT_S)
SCHEDULER_DLQ = ConsumerSpec("scheduler-dlq", Kind.DLQ, ack_wait_s=SCHEDULER_ACK_WAIT_S)
# an evaluation runs for seconds to minutes: consume() keeps it alive with in-progress acks
ROLLOUT_EVALS = ConsumerSpec("rollout-evals", Kind.EVALS, ack_wait_s=15.0)
SCHEDULER_EVALUATED = ConsumerSpec("scheduler-evaluated", Kind.EVALUATED, ack_wait_s=SCHEDULER_ACK_WAIT_S)

CONSUMERS: tuple[ConsumerSpec, ...] = (
    ROLLOUT_WORKERS,
    REWARD_STAGE,
    TRAINER,
    SCHEDULER_ROLLOUTS,
    SCHEDULER_SCORED,
    SCHEDULER_WEIGHTS,
    SCHEDULER_TEACHER,
    SCHEDULER_CONTROL,
    SCHEDULER_DLQ,
    ROLLOUT_EVALS,
    SCHEDULER_EVALUATED,
)


async def _replicas_of(js: JetStreamContext, name: str) -> int | None:
    """The replica count of the stream `name`, None when there is none."""
    try:
        return (await js.stream_info(name)).config.num_replicas or 1
    except NotFoundError:
        return None


async def declare_stream(js: JetStreamContext, kind: Kind, replicas: int = 1) -> int:
    """Create the stream, or update an existing one to this config; the replicas it has.

    When the server refuses to give an existing stream `replicas` copies (a single server asked
    for more than 1, or a cluster with too few servers up), the stream is updated with the count
    it has, and a warning says so: a service does not fail on a stream that the bus already holds.
    A new stream that cannot have `replicas` copies is an error."""
    config, name = stream_config(kind, replicas), stream_name(kind)
    try:
        # identical config: the server answers with the existing stream, so concurrent starts agree
        await js.add_stream(config)
        return replicas
    except APIError as exc:
        # another config under this name (a single server refuses replicas > 1 before it looks)
        if exc.err_code != _STREAM_NAME_IN_USE and await _replicas_of(js, name) in (None, replicas):
            raise
    try:
        await js.update_stream(config)
        return replicas
    except APIError as refused:
        have = await _replicas_of(js, name)
        if have is None or have == replicas:
            raise
        log.warning(
            "stream keeps its replica count",
            extra=log_fields(stream=name, replicas=have, wanted=replicas, error=str(refused)[:300]),
        )
        await js.update_stream(dataclasses.replace(config, num_replicas=have))
        return have


async def declare_consumer(js: JetStreamContext, spec: ConsumerSpec, replicas: int, timeout: float = 30.0) -> None:
    """The server creates the durable, returns it unchanged, or updates it to this config. A stream
    just raised to more replicas takes them in the next moments: until it has, the server refuses
    the consumer's new count (`exceeds parent stream`), so that is waited out."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await js.add_consumer(spec.stream, spec.config(replicas))
            return
        except APIError as exc:
            if exc.err_code != _EXCEEDS_STREAM_REPLICAS or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.2)


async def _differences(js: JetStreamContext, consumers: tuple[ConsumerSpec, ...], replicas: int) -> list[str]:
    """What is not as declared: a missing stream or consumer, or a field of its config."""

    def changed(what: str, want: StreamConfig | ConsumerConfig, have: StreamConfig | ConsumerConfig) -> list[str]:
        # only the fields declared here: the server fills in the others
        fields = {k: v for k, v in dataclasses.asdict(want).items() if v is not None}
        return [f"{what}.{k}" for k, v in fields.items() if getattr(have, k) != v]

    async def config_of(kind: Kind) -> StreamConfig | None:
        try:
            return (await js.stream_info(stream_name(kind))).config
        except NotFoundError:
            return None

    # each stream read once: its own differences, and the replicas its consumers should have
    streams = dict(zip(Kind, await asyncio.gather(*(config_of(kind) for kind in Kind)), strict=True))
    found = [
        changed(stream_name(kind), stream_config(kind, replicas), have) if have else [f"{stream_name(kind)} missing"]
        for kind, have in streams.items()
    ]

    async def consumer(spec: ConsumerSpec) -> list[str]:
        name = f"{spec.stream}/{spec.name}"
        # as many replicas as its stream has (a single server keeps R1 streams: declare_stream)
        stream = streams[spec.kind]
        want = spec.config((stream.num_replicas or 1) if stream is not None else replicas)
        try:
            return changed(name, want, (await js.consumer_info(spec.stream, spec.name)).config)
        except NotFoundError:
            return [f"{name} missing"]

    found += await asyncio.gather(*(consumer(spec) for spec in consumers))
    return [difference for differences in found for difference in differences]


async def declare(js: JetStreamContext, consumers: tuple[ConsumerSpec, ...] = CONSUMERS, *, replicas: int) -> None:
    """Create or update every stream and durable consumer; idempotent, safe from every service.

    When all are already as declared nothing is written: a service connected as its role (jetrl/bus/
    permissions.py) may only read the layout, which the admin step declared before it started
    (`jetrl nats declare`); a service on a bare server declares what is missing or changed.
    `replicas`: of every stream and consumer (`Settings.stream_replicas`, from the caller's settings:
    read from the environment here, it once gave a stack started with 3 in its settings R1 streams)."""
    differences: list[str] = []
    try:
        differences = await _differences(js, consumers, replicas)
        if not differences:
            return
        streams = await asyncio.gather(*(declare_stream(js, kind, replicas) for kind in Kind))
        have = dict(zip(Kind, streams, strict=True))
        await asyncio.gather(*(declare_consumer(js, spec, have[spec.kind]) for spec in consumers))
    except PermissionDenied as exc:
        if differences and all(d.endswith(".num_replicas") and "/" not in d for d in differences):
            # only streams' replica counts differ (a single server keeps R1 when asked for 3, as
            # declare_stream does for the admin): a service starts on them, as the admin's would
            log.warning(
                "streams keep their replica count",
                extra=log_fields(
                    streams=[d.removesuffix(".num_replicas") for d in differences],
                    wanted=replicas,
                    what_to_do="run `jetrl nats declare` as the admin user to change it",
                ),
            )
            return
        more = ", ..." if len(differences) > 5 else ""
        found = f" (not as this version declares it: {', '.join(differences[:5])}{more})" if differences else ""
        raise PermissionDenied(
            f"{exc}. Declaring the streams and durable consumers is the admin's{found}: run `jetrl nats "
            "declare` as the admin user (`jetrl up`, the compose job nats-declare and the k8s Job "
            "jetrl-nats-declare do), then start the service again"
        ) from None
