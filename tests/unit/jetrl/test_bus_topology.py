"""Subjects and the declared topology, without a broker (declaring it on a real nats-server:
tests/integration/jetrl/test_bus_declare.py)."""

import pytest

from jetrl.bus import CONSUMERS, MESSAGE_TYPES, Kind, parse_subject, subject


def test_subject_round_trips():
    assert subject("run-1_a", Kind.TASKS) == "jetrl.run-1_a.tasks"
    for kind in Kind:
        assert parse_subject(subject("r", kind)) == ("r", kind)


@pytest.mark.parametrize("run_id", ["", "a.b", "a*", ">", "a b", "a\tb"])
def test_subject_rejects_run_ids_that_are_not_one_token(run_id):
    with pytest.raises(ValueError, match="subject token"):
        subject(run_id, Kind.TASKS)


@pytest.mark.parametrize("value", ["jetrl.r", "other.r.tasks", "jetrl.r.tasks.x", "jetrl.r.nope", "jetrl..tasks"])
def test_parse_subject_rejects_foreign_subjects(value):
    with pytest.raises(ValueError):
        parse_subject(value)


def test_every_event_kind_has_a_message_type_and_a_consumer():
    assert set(MESSAGE_TYPES) == set(Kind) - {Kind.DLQ}
    # every kind but the broadcast-only control is read by some durable consumer
    assert {c.kind for c in CONSUMERS} == set(Kind)  # so a malformed event anywhere is dead-lettered
    assert len({c.name for c in CONSUMERS}) == len(CONSUMERS)
