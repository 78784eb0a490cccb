"""SIMULATED generation hardware, for benchmarks of the pipeline's scheduling (run spec `simulation`).

Nothing here runs a model. `SimulatedEngine` stands in for an accelerator that is not there: it
spends the time a memory-bound decoder would take, so a benchmark can measure how staleness,
over-provisioning and interruption shape throughput without the hardware. Its tokens are
meaningless digits and `evaluate` always scores zero.

The cost model is continuous batching: one shared decode clock advances every running sequence
by one token per `decode_step_s`, whatever the batch size up to `capacity`; sequences beyond
that wait their turn in arrival order. Each sample's total completion length is drawn from
lognormal(ln(length_median), length_sigma), rounded, at least 1, capped at `max_length`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np

from jetrl.spec_sections import SimulationSpec
from jetrl.states import FinishReason
from svc_rollout.api import GenRequest, GenResult
from svc_rollout.gate import CallGate

__all__ = ["SimulatedEngine", "target_length"]

LOGPROB = math.log(0.5)  # a plausible behaviour log-prob for every simulated token
_TAIL_CLAMP = 1.0 - 1e-12  # keeps the inverse normal CDF finite far in the tail


def _clamp(length: float, max_length: int) -> int:
    return min(max(1, round(length)), max_length)


def target_length(sim: SimulationSpec, seed: int, prefix_len: int = 0) -> int:
    """The total completion length (prefix included) of the sample with this seed.

    The first draw is lognormal from a generator seeded by `seed`, so the same request always
    gets the same length, and a resumed request with its original seed finishes where it would
    have. When the draw does not exceed `prefix_len` (a resumed request with a new seed: the
    prefix already proves the sample is longer), a second draw comes from the lognormal
    conditioned on being longer than the prefix; mixing the two cases gives exactly that
    conditional law, so resuming never biases the length distribution.
    """
    rng = np.random.default_rng(seed)
    mu, sigma = math.log(sim.length_median), sim.length_sigma
    first = _clamp(rng.lognormal(mu, sigma), sim.max_length)
    if first > prefix_len:
        return first
    if prefix_len >= sim.max_length:
        return sim.max_length  # the prefix already fills the cap
    if sigma == 0.0:
        return prefix_len + 1  # a point mass the prefix already passed: finish at the next token
    # inverse CDF above ln(prefix_len + 0.5), the point from which a draw rounds above the prefix
    floor = NormalDist().cdf((math.log(prefix_len + 0.5) - mu) / sigma)
    u = min(floor + rng.random() * (1.0 - floor), _TAIL_CLAMP)
    tail = _clamp(math.exp(mu + sigma * NormalDist().inv_cdf(u)), sim.max_length)
    return max(tail, prefix_len + 1)


@dataclass
class _Row:
    """One sequence on the simulated device: its result so far and where it must stop."""

    result: GenResult
    stop_at: int  # total completion length at which the row ends
    eos: bool  # end with an EOS token (the drawn length was reached below the cap)
    digit_offset: int
    done: bool = False


@dataclass
class _Call:
    """One generate() call: its rows, its abort predicate, and the event its thread waits on."""

    rows: list[_Row]
    should_stop: Callable[[], bool] | None
    finished: threading.Event = field(default_factory=threading.Event)


class SimulatedEngine:
    """Simulated hardware with TorchEngine's interface: `generate`, `load_weights`, `evaluate`,
    `busy_seconds`, `tokenizer`, `version`, `eos_id`. `ticks` counts decode steps taken, so
    tests can reason in steps rather than seconds."""

    def __init__(self, sim: SimulationSpec, tokenizer, version: int = 0, interrupt: bool = True):
        self.sim = sim
        self.tokenizer = tokenizer
        self.version = version
        self.interrupt = interrupt
        self.eos_id = tokenizer.eos_token_id
        self.ticks = 0
        self._digits = _plain_token_ids(tokenizer)
        self._lock = threading.Lock()  # the device: rows, calls, version, clock
        self._calls: list[_Call] = []  # in arrival order: rows are admitted FIFO
        self._ticker: threading.Thread | None = None
        self._gate = CallGate(interrupt)

    @property
    def busy_seconds(self) -> float:
        """Wall time during which at least one generate call was on the device."""
        return self._gate.busy_seconds

    def load_weights(self, path: Path, version: int) -> None:
        """Switch to `version` (simulated weights: nothing to copy). With `interrupt` it takes
        effect at the next decode step; otherwise once no generate call is in flight, and new
        calls wait for it."""
        with self._gate.load(), self._lock:
            self.version = version

    def generate(
        self, requests: Sequence[GenRequest], should_stop: Callable[[], bool] | None = None
    ) -> list[GenResult]:
        """Complete every request on the shared decode clock; results include the prefix. A row
        ends on its drawn length ("eos", or "length" at the cap), on max_new_tokens ("length"),
        or ("aborted") at the first step where `should_stop()` is true."""
        rows = [self._row(r) for r in requests]
        live = [row for row in rows if not row.done]
        if live:
            with self._gate.call():
                call = _Call(live, should_stop)
                with self._lock:
                    self._calls.append(call)
                    if self._ticker is None:
                        self._ticker = threading.Thread(target=self._run_clock, name="sim-decode", daemon=True)
                        self._ticker.start()
                call.finished.wait()
        for row in rows:
            row.result.text = self.tokenizer.decode(row.result.token_ids, skip_special_tokens=True)
        return [row.result for row in rows]

    def close(self) -> None:
        """Nothing to free."""

    def evaluate(
        self, problems, *, max_new_tokens: int = 8, batch_size: int = 256, chat: bool = False
    ) -> tuple[int, int]:
        """(0, len(problems)): simulated tokens answer nothing, so a simulated run has no accuracy."""
        return 0, len(problems)

    # ---- internals ----------------------------------------------------------------------------

    def _row(self, req: GenRequest) -> _Row:
        prefix = list(req.prefix_token_ids)
        result = GenResult(prefix, list(req.prefix_logprobs), list(req.prefix_versions), FinishReason.LENGTH, "")
        target = target_length(self.sim, req.seed, len(prefix))
        stop_at = min(target, len(prefix) + max(req.max_new_tokens, 0))
        row = _Row(result, stop_at, eos=stop_at == target < self.sim.max_length, digit_offset=req.seed)
        if prefix[-1:] == [self.eos_id]:
            row.result.finish_reason, row.done = FinishReason.EOS, True  # the prefix already ended the sample
        elif len(prefix) >= stop_at:
            row.done = True  # no new tokens allowed: "length"
        return row

    def _run_clock(self) -> None:
        """The decode clock: one step per decode_step_s while any row is live; exits when idle
        (the next generate call starts a new one)."""
        step = self.sim.decode_step_s
        deadline = time.perf_counter() + step
        while True:
            time.sleep(max(0.0, deadline - time.perf_counter()))
            now = time.perf_counter()
            with self._lock:
                self._tick()
                if not self._calls:
                    self._ticker = None
                    return
            # keep the average rate through jitter, but never burst to catch up after a stall
            deadline += step
            if deadline < now:
                deadline = now + step

    def _tick(self) -> None:
        """One decode step (under the lock): aborts first, then one token for the first
        `capacity` live rows in arrival order; finished calls are released."""
        self.ticks += 1
        budget = self.sim.capacity
        waiting = []
        for call in self._calls:
            stop = call.should_stop is not None and call.should_stop()
            for row in call.rows:
                if row.done:
                    continue
                if stop:
                    row.result.finish_reason, row.done = FinishReason.ABORTED, True
                elif budget:
                    budget -= 1
                    self._advance(row)
            if all(row.done for row in call.rows):
                call.finished.set()
            else:
                waiting.append(call)
        self._calls = waiting

    def _advance(self, row: _Row) -> None:
        res = row.result
        last = len(res.token_ids) + 1 == row.stop_at
        if last and row.eos:
            token = self.eos_id
        else:
            token = self._digits[(row.digit_offset + len(res.token_ids)) % len(self._digits)]
        res.token_ids.append(token)
        res.logprobs.append(LOGPROB)
        res.versions.append(self.version)
        if last:
            res.finish_reason, row.done = (FinishReason.EOS if row.eos else FinishReason.LENGTH), True


def _plain_token_ids(tokenizer) -> list[int]:
    """Ids of the digit characters (any tokenizer has them), so simulated text decodes."""
    ids = tokenizer.convert_tokens_to_ids(list("0123456789"))
    special = set(tokenizer.all_special_ids)
    plain = [i for i in ids if i is not None and i not in special]
    if not plain:
        raise ValueError("the tokenizer has no plain digit tokens to simulate completions with")
    return plain
