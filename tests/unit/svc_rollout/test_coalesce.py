"""Coalescer (svc_rollout/coalesce.py): which calls of a burst decode together.

Timings are generous (tenths of a second against the service's milliseconds) so a loaded machine
does not move a call across a window's edge.
"""

import time
from functools import partial

from jetrl.states import FinishReason
from svc_rollout.api import GenRequest, GenResult
from svc_rollout.coalesce import GATHER_CAP, Coalescer
from tiny_rollout import in_threads

GATHER = 0.3


def burst(offsets: list[float], gather: float = GATHER) -> list[list[int]]:
    """Calls made at `offsets` seconds (one request each, its index as prompt); the batches decoded,
    as lists of call indices."""
    batches: list[list[int]] = []

    def decode(requests, results, stops):
        batches.append([r.prompt_token_ids[0] for r in requests])

    coalescer = Coalescer(decode, gather)
    start = time.monotonic()

    def call(i: int, at: float) -> None:
        time.sleep(max(0.0, start + at - time.monotonic()))
        coalescer.run([GenRequest([i], 1)], [GenResult([], [], [], FinishReason.LENGTH, "")], lambda: False)

    in_threads([partial(call, i, at) for i, at in enumerate(offsets)], timeout=30)
    return batches


def test_a_burst_spread_wider_than_the_window_still_decodes_as_one_batch():
    # each call comes half a window after the one before: the last is 1.5 windows after the first,
    # so a window counted from the first call alone would leave it (and maybe the third) out
    assert burst([0.0, 0.15, 0.3, 0.45]) == [[0, 1, 2, 3]]


def test_a_call_after_a_quiet_window_goes_to_the_next_batch():
    assert burst([0.0, 0.1, 0.1 + 3 * GATHER]) == [[0, 1], [2]]


def test_a_burst_that_never_pauses_is_cut_at_the_cap():
    offsets = [0.1 * i for i in range(20)]  # 2 s of calls, never a quiet window
    batches = burst(offsets)
    cap = GATHER_CAP * GATHER  # 1.2 s: the first batch holds the calls made before it, about 13
    assert 8 <= len(batches[0]) <= round(cap / 0.1) + 2
    assert sorted(i for b in batches for i in b) == list(range(20))
