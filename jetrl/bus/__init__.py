"""The bus: every stream, subject and consumer is declared here, every publish and consume goes through here."""

from jetrl.bus.connection import BusUnreachable, bus_probe, connect
from jetrl.bus.consume import consume, consume_together
from jetrl.bus.dead_letter import DLQ_CAUSE, DLQ_MSG_ID, DLQ_REASON, DLQ_SEQ, DLQ_SUBJECT
from jetrl.bus.delivery import BatchHandler, Delivery, Handler
from jetrl.bus.follow import follow
from jetrl.bus.publish import publish
from jetrl.bus.retry import CAUSE_FAILED, CAUSE_INVALID, Wait, is_transient
from jetrl.bus.topology import (
    CONSUMERS,
    MESSAGE_TYPES,
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
    declare,
    parse_subject,
    stream_name,
    subject,
)
from jetrl.bus.validate import InvalidEvent, check, decode

__all__ = [
    "BusUnreachable",
    "bus_probe",
    "connect",
    "DLQ_CAUSE",
    "DLQ_MSG_ID",
    "DLQ_REASON",
    "DLQ_SEQ",
    "DLQ_SUBJECT",
    "BatchHandler",
    "Delivery",
    "Handler",
    "consume",
    "consume_together",
    "follow",
    "publish",
    "CAUSE_FAILED",
    "CAUSE_INVALID",
    "Wait",
    "is_transient",
    "CONSUMERS",
    "MESSAGE_TYPES",
    "REWARD_STAGE",
    "ROLLOUT_EVALS",
    "ROLLOUT_WORKERS",
    "SCHEDULER_CONTROL",
    "SCHEDULER_DLQ",
    "SCHEDULER_EVALUATED",
    "SCHEDULER_ROLLOUTS",
    "SCHEDULER_SCORED",
    "SCHEDULER_TEACHER",
    "SCHEDULER_WEIGHTS",
    "TRAINER",
    "ConsumerSpec",
    "Kind",
    "declare",
    "parse_subject",
    "stream_name",
    "subject",
    "InvalidEvent",
    "check",
    "decode",
]
