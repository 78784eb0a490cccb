"""SimulatedEngine (svc_rollout/simulated.py): the simulated-hardware decode clock.

Time is counted in decode steps (`engine.ticks`), never in seconds, so the assertions hold on a
loaded machine; the step is a few milliseconds only to keep the tests short.
"""

import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from jetrl.policy import make_char_tokenizer
from jetrl.spec_sections import SimulationSpec
from jetrl.tasks import Problem
from svc_rollout.api import GenRequest
from svc_rollout.simulated import LOGPROB, SimulatedEngine, target_length

TOK = make_char_tokenizer()
EOS = TOK.eos_token_id
PROMPT = TOK("1+2=")["input_ids"]


def sim(**kw) -> SimulationSpec:
    return SimulationSpec(
        **{"decode_step_s": 0.002, "capacity": 64, "length_median": 6.0, "length_sigma": 1.0, "max_length": 20, **kw}
    )


def req(seed=0, max_new=100, **kw) -> GenRequest:
    return GenRequest(PROMPT, max_new, seed=seed, **kw)


def expected_length(spec: SimulationSpec, seed: int) -> int:
    """The documented law, written out independently: seeded lognormal, rounded, >= 1, capped."""
    draw = np.random.default_rng(seed).lognormal(math.log(spec.length_median), spec.length_sigma)
    return min(max(1, round(draw)), spec.max_length)


def in_thread(fn, *args):
    """Run fn(*args) on a thread; returns (thread, box) where box["out"] holds the result."""
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("out", fn(*args)))
    t.start()
    return t, box


def wait_ticks(engine, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while engine.ticks < n:
        assert time.monotonic() < deadline, f"the clock never reached {n} ticks"
        time.sleep(0.0005)


def test_lengths_follow_the_seeded_lognormal_and_the_cap():
    spec = sim(capacity=512)
    engine = SimulatedEngine(spec, TOK)
    seeds = range(200)
    results = engine.generate([req(s) for s in seeds])
    lengths = [len(r.token_ids) for r in results]
    assert lengths == [expected_length(spec, s) for s in seeds]
    for r in results:
        if len(r.token_ids) == spec.max_length:
            assert r.finish_reason == "length" and EOS not in r.token_ids
        else:
            assert r.finish_reason == "eos" and r.token_ids[-1] == EOS and EOS not in r.token_ids[:-1]
        assert r.logprobs == [LOGPROB] * len(r.token_ids)
        assert r.text.isdigit() or r.text == ""  # digits, the EOS is skipped when decoding
    assert {"eos", "length"} <= {r.finish_reason for r in results}  # the cap binds for some
    # all rows ran together on one clock: as many steps as the longest, not the sum
    assert engine.ticks == max(lengths)
    # and the law itself: over many seeds the median is length_median
    draws = [target_length(sim(max_length=10_000), s) for s in range(4000)]
    assert abs(np.median(draws) - 6.0) <= 1.0


def test_max_new_tokens_cuts_with_length():
    spec = sim(length_sigma=0.0, length_median=12)
    (r,) = SimulatedEngine(spec, TOK).generate([req(0, max_new=5)])
    assert len(r.token_ids) == 5 and r.finish_reason == "length" and EOS not in r.token_ids


def test_a_resumed_request_finishes_at_the_same_total_length():
    spec = sim(length_median=15, length_sigma=0.5)
    engine = SimulatedEngine(spec, TOK)
    seed = next(s for s in range(100) if 8 <= expected_length(spec, s) < spec.max_length)
    (whole,) = engine.generate([req(seed)])
    start = engine.ticks
    (part,) = engine.generate([req(seed)], should_stop=lambda: engine.ticks >= start + 4)
    assert part.finish_reason == "aborted" and 0 < len(part.token_ids) < len(whole.token_ids)
    (resumed,) = engine.generate(
        [
            req(
                seed,
                max_new=100 - len(part.token_ids),
                prefix_token_ids=part.token_ids,
                prefix_logprobs=part.logprobs,
                prefix_versions=part.versions,
            )
        ]
    )
    assert len(resumed.token_ids) == len(whole.token_ids) and resumed.finish_reason == "eos"
    assert resumed.token_ids[: len(part.token_ids)] == part.token_ids  # the prefix comes back unchanged


def test_resuming_with_a_new_seed_draws_a_length_beyond_the_prefix():
    # the worker gives a resumed attempt a new seed: its length is drawn again, conditioned on
    # being longer than the prefix it already has
    spec = sim(length_median=6, length_sigma=1.0, max_length=500)
    assert all(target_length(spec, seed, prefix_len=30) > 30 for seed in range(300))
    assert target_length(sim(length_sigma=0.0, length_median=6), 1, prefix_len=9) == 10
    assert target_length(spec, 3, prefix_len=500) == 500


def test_abort_ends_every_live_row_within_one_tick():
    spec = sim(length_sigma=0.0, length_median=19)
    engine = SimulatedEngine(spec, TOK)
    results = engine.generate([req(s) for s in range(5)], should_stop=lambda: engine.ticks >= 7)
    # the predicate is asked at the start of each step: true from step 7 on, so that step
    # produces no token and every row ends there
    assert [len(r.token_ids) for r in results] == [6] * 5
    assert {r.finish_reason for r in results} == {"aborted"}
    assert engine.ticks == 7


def test_two_concurrent_calls_share_decode_steps():
    spec = sim(length_sigma=0.0, length_median=60, max_length=100, decode_step_s=0.004)
    engine = SimulatedEngine(spec, TOK)
    first, box = in_thread(engine.generate, [req(1)])
    wait_ticks(engine, 1)
    joined_at = engine.ticks
    (second,) = engine.generate([req(2, max_new=30)])
    first.join()
    assert len(second.token_ids) == 30 and len(box["out"][0].token_ids) == 60
    assert joined_at < 30  # the second call overlapped the first...
    assert engine.ticks == 60  # ...and cost no steps of its own: 60, not 90


def test_capacity_queues_the_excess_in_arrival_order():
    spec = sim(length_sigma=0.0, length_median=10, capacity=2)
    engine = SimulatedEngine(spec, TOK)
    results = engine.generate([req(s) for s in range(3)])
    assert [len(r.token_ids) for r in results] == [10, 10, 10]
    assert engine.ticks == 20  # the third row waited for the first two: 10 steps, then 10 more


def test_interrupt_switches_version_at_the_next_tick():
    spec = sim(length_sigma=0.0, length_median=40, max_length=50, decode_step_s=0.004)
    engine = SimulatedEngine(spec, TOK, interrupt=True)
    t, box = in_thread(engine.generate, [req(0)])
    wait_ticks(engine, 10)
    engine.load_weights(Path("unused"), 1)
    t.join()
    versions = box["out"][0].versions
    assert len(versions) == 40 and versions == sorted(versions) and set(versions) == {0, 1}
    assert versions.index(1) >= 10


def test_finish_mode_loads_between_calls():
    spec = sim(length_sigma=0.0, length_median=40, max_length=50, decode_step_s=0.004)
    engine = SimulatedEngine(spec, TOK, interrupt=False)
    t, box = in_thread(engine.generate, [req(0)])
    wait_ticks(engine, 10)
    loader, _ = in_thread(engine.load_weights, Path("unused"), 1)
    deadline = time.monotonic() + 10
    while not engine._gate.pending_loads:  # the load is now waiting for the call in flight
        assert time.monotonic() < deadline
        time.sleep(0.0005)
    late, late_box = in_thread(engine.generate, [req(0)])  # arrives while the load is pending
    loader.join()  # returns only once the call in flight is done
    assert engine.version == 1 and not t.is_alive()
    assert box["out"][0].versions == [0] * 40
    late.join()
    assert late_box["out"][0].versions == [1] * 40  # it was held back until the load was done


def test_busy_seconds_counts_decoding_time_only():
    spec = sim(length_sigma=0.0, length_median=25, max_length=50, decode_step_s=0.004)
    engine = SimulatedEngine(spec, TOK)
    assert engine.busy_seconds == 0.0
    engine.generate([req(0)])
    busy = engine.busy_seconds
    assert busy >= 25 * 0.004 * 0.9
    time.sleep(0.05)  # idle: the clock has stopped
    assert engine.busy_seconds == busy


def test_prefix_edge_cases_and_evaluate():
    engine = SimulatedEngine(sim(), TOK)
    done, capped = engine.generate(
        [
            req(
                0,
                prefix_token_ids=[TOK.convert_tokens_to_ids("7"), EOS],
                prefix_logprobs=[-1.0, -1.0],
                prefix_versions=[0, 0],
            ),
            req(0, max_new=0),
        ]
    )
    assert done.finish_reason == "eos" and len(done.token_ids) == 2 and done.text == "7"
    assert capped.finish_reason == "length" and capped.token_ids == []
    assert engine.ticks == 0  # nothing to decode: the clock never started
    assert engine.evaluate([Problem("p0", "1+1=", "2")] * 3, max_new_tokens=4) == (0, 3)


def test_rejects_a_tokenizer_without_plain_digits():
    class NoDigits:
        eos_token_id = 2
        all_special_ids = [0, 1, 2]

        def convert_tokens_to_ids(self, tokens):
            return [None] * len(tokens)

    with pytest.raises(ValueError, match="digit"):
        SimulatedEngine(sim(), NoDigits())
