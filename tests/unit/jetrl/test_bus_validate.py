import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jetrl.bus import MESSAGE_TYPES, InvalidEvent, Kind, check, decode
from jetrl.v1 import events_pb2 as ev


@pytest.mark.parametrize("kind", list(MESSAGE_TYPES))
def test_valid_events_decode_to_themselves(kind, make_event):
    message = make_event(kind, "run1")
    assert decode(kind, message.SerializeToString(), "run1") == message


def _set(path: str, value):
    """A mutation setting `path` (dotted, with [i] indexes) on a message."""

    def mutate(m):
        *parents, last = path.split(".")
        for p in parents:
            m = m.samples[int(p[8:-1])] if p.startswith("samples[") else getattr(m, p)
        if isinstance(value, list):
            del getattr(m, last)[:]
            getattr(m, last).extend(value)
        else:
            setattr(m, last, value)

    return mutate


CASES = [
    (Kind.TASKS, _set("group_id", ""), "Task.group_id is empty"),
    (Kind.TASKS, _set("num_samples", 0), "num_samples"),
    (Kind.TASKS, _set("prompt_token_ids", []), "prompt_token_ids is empty"),
    (Kind.TASKS, _set("sampling.max_new_tokens", 0), "max_new_tokens"),
    (Kind.TASKS, _set("sampling.top_p", 0.0), "top_p"),
    (Kind.ROLLOUTS, _set("samples[1].logprobs", [-0.1]), "2 tokens but 1 logprobs"),
    (Kind.ROLLOUTS, _set("samples[0].token_versions", [0, 0, 0]), "3 token versions"),
    (Kind.ROLLOUTS, _set("samples[0].completion_token_ids", []), "no completion tokens"),
    (Kind.ROLLOUTS, _set("samples[0].logprobs", [-0.1, 0.5]), "<= 0"),
    (Kind.ROLLOUTS, _set("samples[0].logprobs", [-0.1, math.nan]), "finite"),
    (Kind.ROLLOUTS, _set("samples[0].index", -1), "index -1"),
    (Kind.ROLLOUTS, _set("samples[0].sample_id", ""), "sample_id is empty"),
    (Kind.ROLLOUTS, _set("samples", []), "samples is empty"),
    (Kind.ROLLOUTS, _set("samples[1].group_id", "other"), "holds sample"),
    (Kind.ROLLOUTS, _set("samples[1].attempt", 1), "holds sample"),
    (Kind.ROLLOUTS, _set("samples[1].view", "teacher"), "holds sample"),
    (Kind.ROLLOUTS, _set("samples[1].index", 0), "index twice"),
    (Kind.GROUPS, _set("samples", []), "samples is empty"),
    (Kind.GROUPS, _set("samples[1].group_id", "other"), "holds sample"),
    (Kind.GROUPS, _set("samples[0].logprobs", [-1.0]), "logprobs"),
    (Kind.SCORED, _set("rewards", [1.0]), "1 rewards for 2 samples"),
    (Kind.SCORED, _set("rewards", [1.0, math.inf]), "non-finite"),
    (Kind.BATCHES, _set("groups", []), "groups is empty"),
    (Kind.WEIGHTS, _set("version", 0), "version is 0"),
    (Kind.WEIGHTS, _set("parent_version", 5), "names parent 5"),
    (Kind.WEIGHTS, _set("sha256", "abc"), "64 hex"),
    (Kind.WEIGHTS, _set("size_bytes", 0), "size_bytes"),
    (Kind.WEIGHTS, _set("uri", ""), "neither uri nor grpc_endpoint"),
    (Kind.CONTROL, _set("kind", ev.Control.KIND_UNSPECIFIED), "Control.kind"),
    (Kind.CONTROL, _set("kind", 42), "Control.kind 42"),
]


@pytest.mark.parametrize("kind, mutate, reason", CASES, ids=[f"{k}-{r}" for k, _, r in CASES])
def test_bad_shapes_are_rejected_with_the_reason(kind, mutate, reason, make_event):
    message = make_event(kind, "run1")
    mutate(message)
    with pytest.raises(InvalidEvent, match=re.escape(reason)):
        decode(kind, message.SerializeToString(), "run1")


def test_run_id_must_match_the_subject(make_event):
    data = make_event(Kind.TASKS, "run1").SerializeToString()
    with pytest.raises(InvalidEvent, match="run_id 'run1' does not match the subject's run 'run2'"):
        decode(Kind.TASKS, data, "run2")
    with pytest.raises(InvalidEvent, match="subject token"):
        check(Kind.CONTROL, ev.Control(run_id="a.b", kind=ev.Control.STOP), "a.b")


def test_garbage_is_rejected():
    with pytest.raises(InvalidEvent, match="not a valid jetrl.v1.Task"):
        decode(Kind.TASKS, b"\xff\xff\xff", "run1")


def test_unknown_fields_are_rejected_even_when_nested(make_event):
    extra = b"\xf8\x06\x01"  # field 111, varint 1: parses fine, means nothing
    with pytest.raises(InvalidEvent, match="unknown field"):
        decode(Kind.TASKS, make_event(Kind.TASKS, "run1").SerializeToString() + extra, "run1")
    group = make_event(Kind.GROUPS, "run1")
    sample = group.samples[1]
    sample.ParseFromString(sample.SerializeToString() + extra)
    with pytest.raises(InvalidEvent, match=r"unknown field\(s\) at samples\[1\]"):
        decode(Kind.GROUPS, group.SerializeToString(), "run1")


def test_check_refuses_the_wrong_message_type(make_event):
    with pytest.raises(TypeError):
        check(Kind.TASKS, make_event(Kind.CONTROL, "run1"), "run1")
    with pytest.raises(ValueError):
        decode(Kind.DLQ, b"", "run1")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(list(MESSAGE_TYPES)), data=st.binary(max_size=256), prefix=st.booleans())
def test_random_bytes_never_crash_decode(kind, data, prefix, make_event):
    # with a valid prefix the random tail lands in real fields, not only in the parser's error path
    payload = (make_event(kind, "run1").SerializeToString() if prefix else b"") + data
    try:
        message = decode(kind, payload, "run1")
    except InvalidEvent:
        return
    check(kind, message, "run1")


@pytest.mark.parametrize(
    ("kind", "field", "value", "reason"),
    [
        (Kind.ROLLOUTS, "samples[0].finish_reason", "stop", "finish_reason 'stop' is not one of"),
        (Kind.ROLLOUTS, "samples[0].finish_reason", "dropped", "finish_reason 'dropped' is not one of"),  # lineage's
        (Kind.ROLLOUTS, "samples[0].view", "sideways", "view 'sideways' is not one of"),
        (Kind.TASKS, "view", "sideways", "view 'sideways' is not one of"),
    ],
)
def test_finish_reasons_and_views_are_the_declared_ones(make_event, kind, field, value, reason):
    event = make_event(kind, "run1")
    _set(field, value)(event)
    with pytest.raises(InvalidEvent, match=reason):
        check(kind, event, "run1")
