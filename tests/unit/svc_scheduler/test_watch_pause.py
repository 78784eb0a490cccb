"""How often a WatchRun stream reads a run's progress (svc_scheduler/server.py:watch_pause)."""

import pytest

from svc_scheduler.server import WATCH_INTERVAL_S, WATCH_SHARE, watch_pause


@pytest.mark.parametrize("took", [0.0, 0.01, 0.05])
def test_a_cheap_progress_query_is_read_every_interval(took):
    assert watch_pause(took) == WATCH_INTERVAL_S


@pytest.mark.parametrize("took", [0.1, 0.8, 5.0])
def test_a_long_runs_progress_query_takes_at_most_its_share_of_the_scheduler(took):
    """The query aggregates every sample of the run: as the run grows, a watcher waits longer."""
    pause = watch_pause(took)
    assert pause > WATCH_INTERVAL_S
    assert took / (took + pause) == pytest.approx(WATCH_SHARE)
