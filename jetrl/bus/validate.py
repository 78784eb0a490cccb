"""Decoding and validating events: a malformed event is rejected with a precise reason.

proto3 parses most garbage without complaint (unknown tags are kept aside, missing fields read
as defaults), so parsing alone proves little: decode also refuses unknown fields, empty ids, a
run id that disagrees with the subject, and shapes the consumers could not use.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from jetrl.bus.topology import MESSAGE_TYPES, Kind, check_run_id
from jetrl.states import WIRE_FINISH_REASONS, FinishReason, ViewName
from jetrl.v1 import events_pb2

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class InvalidEvent(Exception):
    """An event no consumer can use; the message says why. It goes to the dead-letter subject."""


def decode(kind: Kind, data: bytes, subject_run_id: str) -> Message:
    """Parse and validate the event of `kind` carried on run `subject_run_id`'s subject."""
    cls = MESSAGE_TYPES.get(Kind(kind))
    if cls is None:
        raise ValueError(f"kind {kind!r} carries no event message")
    try:
        message = cls.FromString(data)
    except Exception as exc:  # DecodeError mostly; any parser failure means the same thing here
        raise InvalidEvent(f"not a valid {cls.DESCRIPTOR.full_name}: {exc}") from None
    unknown = _unknown_field(message)
    if unknown:
        raise InvalidEvent(f"{cls.DESCRIPTOR.full_name} has unknown field(s) at {unknown} (garbage or a newer schema)")
    check(kind, message, subject_run_id)
    return message


def check(kind: Kind, message: Message, run_id: str) -> None:
    """Validate a message object of `kind` for run `run_id` (also used before publishing)."""
    cls = MESSAGE_TYPES.get(Kind(kind))
    if cls is None or not isinstance(message, cls):
        raise TypeError(f"{kind} events are {cls and cls.__name__}, got {type(message).__name__}")
    _CHECKS[Kind(kind)](message)
    # every event but ScoredGroup carries its run_id at the top; Message itself declares no field
    own = message.group.run_id if isinstance(message, events_pb2.ScoredGroup) else message.run_id  # type: ignore[attr-defined]
    try:
        check_run_id(own)
    except ValueError as exc:
        raise InvalidEvent(str(exc)) from None
    if own != run_id:
        raise InvalidEvent(f"run_id {own!r} does not match the subject's run {run_id!r}")


def _unknown_field(message: Message, path: str = "") -> str:
    """Path of the first (sub)message carrying unknown fields, '' when there is none."""
    if len(UnknownFieldSet(message)):
        return path or "<root>"
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = value.values() if field.message_type.fields_by_name["value"].message_type else ()
        else:
            values = value if field.is_repeated else (value,)
        for i, sub in enumerate(values):
            found = _unknown_field(sub, f"{path}{field.name}[{i}]." if field.is_repeated else f"{path}{field.name}.")
            if found:
                return found
    return ""


def _require(message: Message, *names: str) -> None:
    for name in names:
        if not getattr(message, name):
            raise InvalidEvent(f"{message.DESCRIPTOR.name}.{name} is empty")


def _finite(values, what: str) -> None:
    if not all(math.isfinite(v) for v in values):
        raise InvalidEvent(f"{what} has a non-finite value")


def _task(t: events_pb2.Task) -> None:
    _require(t, "run_id", "group_id", "prompt_id", "prompt_token_ids")
    if t.num_samples < 1:
        raise InvalidEvent(f"Task.num_samples is {t.num_samples}, must be >= 1")
    s = t.sampling
    if s.max_new_tokens < 1:
        raise InvalidEvent(f"Task.sampling.max_new_tokens is {s.max_new_tokens}, must be >= 1")
    if not (math.isfinite(s.temperature) and s.temperature >= 0):
        raise InvalidEvent(f"Task.sampling.temperature is {s.temperature}, must be finite and >= 0")
    if not 0 < s.top_p <= 1:
        raise InvalidEvent(f"Task.sampling.top_p is {s.top_p}, must be in (0, 1]")
    if t.attempt < 0 or t.first_index < 0:
        raise InvalidEvent(f"Task.attempt {t.attempt} / first_index {t.first_index} must be >= 0")
    _view(t.view, f"Task {t.group_id}")
    last = t.first_index + t.num_samples - 1
    for p in t.resume:
        if not t.first_index <= p.index <= last:
            raise InvalidEvent(f"Task.resume index {p.index} is outside {t.first_index}..{last}")
        if not len(p.token_ids) == len(p.logprobs) == len(p.token_versions):
            raise InvalidEvent(f"Task.resume[{p.index}]: token ids, logprobs and versions differ in length")


def _view(view: str, what: str) -> None:
    if view and view not in set(ViewName):
        raise InvalidEvent(f"{what}: view {view!r} is not one of {sorted(ViewName)}")


def _sample(s: events_pb2.Sample) -> None:
    _require(s, "run_id", "group_id", "sample_id")
    n = len(s.completion_token_ids)
    if (
        n == 0 and s.finish_reason != FinishReason.ABORTED
    ):  # an attempt aborted before its first token hands back nothing
        raise InvalidEvent(f"Sample {s.sample_id} has no completion tokens")
    if not 0 <= s.prefix_len <= n or s.attempt < 0:
        raise InvalidEvent(f"Sample {s.sample_id}: prefix_len {s.prefix_len} / attempt {s.attempt} out of range")
    if not n == len(s.logprobs) == len(s.token_versions):
        raise InvalidEvent(
            f"Sample {s.sample_id}: {n} tokens but {len(s.logprobs)} logprobs "
            f"and {len(s.token_versions)} token versions"
        )
    if s.index < 0:
        raise InvalidEvent(f"Sample {s.sample_id}: index {s.index} < 0")
    if s.finish_reason and s.finish_reason not in WIRE_FINISH_REASONS:  # unset: a producer that says nothing
        raise InvalidEvent(
            f"Sample {s.sample_id}: finish_reason {s.finish_reason!r} is not one of {sorted(WIRE_FINISH_REASONS)}"
        )
    _view(s.view, f"Sample {s.sample_id}")
    if not all(math.isfinite(lp) and lp <= 0 for lp in s.logprobs):
        raise InvalidEvent(f"Sample {s.sample_id}: logprobs must be finite and <= 0")
    if n and min(s.token_versions) < 0:
        raise InvalidEvent(f"Sample {s.sample_id}: negative token version")


def _rollout(r: events_pb2.Rollout) -> None:
    _require(r, "run_id", "group_id", "samples")
    for s in r.samples:
        _sample(s)
        if (s.run_id, s.group_id, s.attempt, s.view) != (r.run_id, r.group_id, r.attempt, r.view):
            raise InvalidEvent(
                f"Rollout of {r.group_id} attempt {r.attempt} view {r.view!r} holds sample {s.sample_id} of "
                f"{s.group_id} attempt {s.attempt} view {s.view!r}"
            )
    if len({s.index for s in r.samples}) != len(r.samples):
        raise InvalidEvent(f"Rollout of {r.group_id} attempt {r.attempt} holds a sample index twice")


def _group(g: events_pb2.PromptGroup) -> None:
    _require(g, "run_id", "group_id", "samples")
    for s in g.samples:
        if s.group_id != g.group_id or s.run_id != g.run_id:
            raise InvalidEvent(f"PromptGroup {g.group_id} holds sample {s.sample_id} of {s.run_id}/{s.group_id}")
        _sample(s)


def _scored(sg: events_pb2.ScoredGroup) -> None:
    if not sg.HasField("group"):
        raise InvalidEvent("ScoredGroup.group is missing")
    _group(sg.group)
    n = len(sg.group.samples)
    if len(sg.rewards) != n:
        raise InvalidEvent(f"ScoredGroup {sg.group.group_id}: {len(sg.rewards)} rewards for {n} samples")
    if sg.details and len(sg.details) != n:
        raise InvalidEvent(f"ScoredGroup {sg.group.group_id}: {len(sg.details)} details for {n} samples")
    _finite(sg.rewards, f"ScoredGroup {sg.group.group_id} rewards")


def _batch(b: events_pb2.Batch) -> None:
    _require(b, "run_id", "batch_id", "groups")
    for sg in b.groups:
        _scored(sg)
        if sg.group.run_id != b.run_id:
            raise InvalidEvent(f"Batch {b.batch_id} holds group {sg.group.group_id} of run {sg.group.run_id}")


def _weights(w: events_pb2.WeightsAnnouncement) -> None:
    _require(w, "run_id")
    if w.version < 1:
        raise InvalidEvent(f"WeightsAnnouncement.version is {w.version}, must be >= 1")
    if w.parent_version != w.version - 1:
        raise InvalidEvent(f"WeightsAnnouncement v{w.version} names parent {w.parent_version}, not {w.version - 1}")
    if not _SHA256.fullmatch(w.sha256):
        raise InvalidEvent(f"WeightsAnnouncement.sha256 {w.sha256!r} is not 64 hex digits")
    if w.size_bytes <= 0:
        raise InvalidEvent(f"WeightsAnnouncement.size_bytes is {w.size_bytes}, must be > 0")
    if not (w.uri or w.grpc_endpoint):
        raise InvalidEvent("WeightsAnnouncement has neither uri nor grpc_endpoint")
    _finite(w.metrics.values(), f"WeightsAnnouncement v{w.version} metrics")


def _control(c: events_pb2.Control) -> None:
    _require(c, "run_id")
    if c.kind == events_pb2.Control.KIND_UNSPECIFIED or c.kind not in events_pb2.Control.Kind.values():
        raise InvalidEvent(f"Control.kind {c.kind} is not a known kind")
    if c.kind == events_pb2.Control.ABORT and not c.aborted:
        raise InvalidEvent("Control ABORT names no task attempt")


def _eval_request(e: events_pb2.EvalRequest) -> None:
    _require(e, "run_id")
    if e.min_version < 0:
        raise InvalidEvent(f"EvalRequest.min_version is {e.min_version}, must be >= 0")


def _evaluation(e: events_pb2.Evaluation) -> None:
    _require(e, "run_id")
    if not 0 <= e.requested <= e.version:
        raise InvalidEvent(f"Evaluation of v{e.version} answers a request for v{e.requested}")
    if not 0 <= e.correct <= e.total:
        raise InvalidEvent(f"Evaluation has {e.correct} correct of {e.total}")


# each check takes its kind's message class (MESSAGE_TYPES), which check() has just made sure of
_CHECKS: dict[Kind, Callable[[Any], None]] = {
    Kind.TASKS: _task,
    Kind.ROLLOUTS: _rollout,
    Kind.GROUPS: _group,
    Kind.SCORED: _scored,
    Kind.BATCHES: _batch,
    Kind.WEIGHTS: _weights,
    Kind.TEACHER: _weights,
    Kind.CONTROL: _control,
    Kind.EVALS: _eval_request,
    Kind.EVALUATED: _evaluation,
}
