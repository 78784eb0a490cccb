"""What a handler's exception means (jetrl/bus/retry.py): an outage is retried without end and
without counting, anything else is the event's failure."""

import nats.errors
import nats.js.errors
import pytest

from jetrl.bus import is_transient


@pytest.mark.parametrize(
    "exc",
    [
        nats.errors.NoRespondersError(),
        nats.js.errors.NoStreamResponseError(),  # a publish while the stream elects a leader
        nats.errors.TimeoutError(),
        ConnectionRefusedError("broker restarting"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_the_broker_being_away_is_transient(exc):
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc", [ValueError("bad value"), nats.js.errors.BadRequestError()], ids=lambda e: type(e).__name__
)
def test_anything_else_is_the_events_failure(exc):
    assert not is_transient(exc)
