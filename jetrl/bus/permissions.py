"""Who may publish what: one NATS user per service role, derived from the topology.

`ROLES` says which event kinds each service role publishes, which durable consumers it consumes
and which broadcast kinds it follows; `permissions` turns that into the nats-server subjects the
role may publish to and subscribe to (the JetStream API included), and `render_authorization`
into the `authorization { users = [...] }` block every deployment's nats-server reads
(deploy/nats/auth.conf, deploy/k8s/base/nats/auth.conf, the one `jetrl up` writes). Passwords are
never in it: each is the environment variable `password_variable(role)`, which nats-server
expands at start.

The admin user may do anything: it declares the streams and durable consumers (`jetrl nats
declare`: `jetrl up`, the compose job nats-declare, the k8s Job jetrl-nats-declare) and is the
operator's (a STOP by hand, the `nats` CLI). Services only check the layout at start
(topology.declare finds it in place), so a service role can neither create nor change a stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from jetrl.bus.topology import (
    CONSUMERS,
    PREFIX,
    REWARD_STAGE,
    ROLLOUT_EVALS,
    ROLLOUT_WORKERS,
    SCHEDULER_CONTROL,
    SCHEDULER_DLQ,
    SCHEDULER_EVALUATED,
    SCHEDULER_ROLLOUTS,
    SCHEDULER_SCORED,
    SCHEDULER_TEACHER,
    SCHEDULER_WEIGHTS,
    TRAINER,
    ConsumerSpec,
    Kind,
    stream_name,
)

ADMIN = "admin"
JS_API = "$JS.API"
INBOX = "_INBOX"


@dataclass(frozen=True)
class Role:
    """What one service does on the bus: the kinds it publishes, the durable consumers it consumes
    (every one of them may dead-letter), the broadcast kinds it follows (ordered ephemeral
    consumers, jetrl.bus.follow)."""

    name: str
    publishes: frozenset[Kind]
    consumes: tuple[ConsumerSpec, ...] = ()
    follows: frozenset[Kind] = frozenset()

    @property
    def inbox(self) -> str:
        """The prefix of this role's reply subjects: its own, so no other role can read its replies."""
        return inbox_prefix(self.name)

    def may_publish(self) -> frozenset[Kind]:
        """The kinds this role may publish: its own, and the dead-letter kind when it consumes."""
        return self.publishes | ({Kind.DLQ} if self.consumes else frozenset())


ROLES: dict[str, Role] = {
    role.name: role
    for role in (
        Role(
            "scheduler",
            publishes=frozenset({Kind.TASKS, Kind.GROUPS, Kind.BATCHES, Kind.CONTROL, Kind.EVALS}),
            consumes=(
                SCHEDULER_ROLLOUTS,
                SCHEDULER_SCORED,
                SCHEDULER_WEIGHTS,
                SCHEDULER_TEACHER,
                SCHEDULER_CONTROL,
                SCHEDULER_DLQ,
                SCHEDULER_EVALUATED,
            ),
        ),
        Role(
            "rollout",
            publishes=frozenset({Kind.ROLLOUTS, Kind.EVALUATED}),
            consumes=(ROLLOUT_WORKERS, ROLLOUT_EVALS),
            follows=frozenset({Kind.WEIGHTS, Kind.TEACHER, Kind.CONTROL}),
        ),
        Role("reward", publishes=frozenset({Kind.SCORED}), consumes=(REWARD_STAGE,)),
        Role(
            "trainer",
            publishes=frozenset({Kind.WEIGHTS, Kind.TEACHER}),
            consumes=(TRAINER,),
            follows=frozenset({Kind.CONTROL}),
        ),
    )
}

# the service module each role runs as (jetrl up, compose, k8s give it that role's credentials)
SERVICE_ROLES = {
    "svc_scheduler": "scheduler",
    "svc_rollout": "rollout",
    "svc_reward": "reward",
    "svc_trainer": "trainer",
}
USERS = (ADMIN, *ROLES)


def inbox_prefix(user: str) -> str:
    """Reply subjects of a client connected as `user` (jetrl.bus.connection sets it)."""
    return f"{INBOX}.{user}"


def password_variable(user: str) -> str:
    """The environment variable holding `user`'s password: nats-server's (the config refers to
    it), the compose file's and the k8s Secret jetrl-nats's key."""
    return f"NATS_{user.upper()}_PASSWORD"


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def _layout_info() -> list[str]:
    """Reading the layout (no message): every service checks at start that it is in place."""
    return [f"{JS_API}.STREAM.INFO.{stream_name(kind)}" for kind in Kind] + [
        f"{JS_API}.CONSUMER.INFO.{spec.stream}.{spec.name}" for spec in CONSUMERS
    ]


def permissions(role: Role) -> Permissions:
    """The subjects `role` may publish to and subscribe to; the server refuses every other."""
    publish = [f"{PREFIX}.*.{kind}" for kind in sorted(role.may_publish())]
    publish += _layout_info()
    for spec in role.consumes:
        # fetch from its durable, then ack / nak / in-progress / term what it fetched
        publish += [spec.fetch_subject, f"$JS.ACK.{spec.stream}.{spec.name}.>"]
    for kind in sorted(role.follows):
        # follow(): an ordered consumer is an ephemeral one, created (again, after a gap) on the
        # stream's subject that cannot name a durable, and answering the server's flow control
        publish += [f"{JS_API}.CONSUMER.CREATE.{stream_name(kind)}", f"$JS.FC.{stream_name(kind)}.>"]
    # every reply comes to the role's own inbox: JetStream API answers, publish acks, fetched and
    # followed messages
    return Permissions(publish=tuple(publish), subscribe=(f"{role.inbox}.>",))


def _allow(subjects: tuple[str, ...]) -> list[str]:
    """One subject a line, quoted ('$' and '>' are not bare words to nats-server)."""
    return ["{allow: [", *(f'        "{s}"' for s in subjects), "      ]}"]


def render_authorization() -> str:
    """The nats-server `authorization` block of every user: admin, then each role."""
    lines = [
        "# GENERATED by `jetrl nats config` from jetrl/bus/permissions.py (the topology's roles): do",
        "# not edit; tests/unit/jetrl/test_nats_permissions_render.py checks the copies are current.",
        "# Each password is an environment variable of nats-server: a letter, then letters, digits, '-'",
        "# or '_' (nats-server reads the value as a config value: digits alone would be a number).",
        "authorization {",
        "  users = [",
        f'    {{user: "{ADMIN}", password: ${password_variable(ADMIN)}, permissions: {{',
        '      publish: ">", subscribe: ">"',
        "    }}",
    ]
    for role in ROLES.values():
        allowed = permissions(role)
        publish, subscribe = _allow(allowed.publish), _allow(allowed.subscribe)
        lines += [
            f'    {{user: "{role.name}", password: ${password_variable(role.name)}, permissions: {{',
            f"      publish: {publish[0]}",
            *publish[1:],
            f"      subscribe: {subscribe[0]}",
            *subscribe[1:],
            "    }}",
        ]
    lines += ["  ]", "}", ""]
    return "\n".join(lines)
