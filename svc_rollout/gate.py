"""The gate between generate calls and weight loads, shared by every generation engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CallGate"]


class CallGate:
    """Generate calls in flight against weight loads, shared by every engine.

    `interrupt=True`: a load never waits here (it lands between two decode steps, under the
    engine's own lock). `interrupt=False` ("finish"): a load waits until no generate call is in
    flight, and new calls wait for a pending load, so a stream of calls cannot starve it. The gate
    also clocks the wall time with at least one call in flight (not a sum over calls).
    """

    def __init__(self, interrupt: bool):
        self.interrupt = interrupt
        self.pending_loads = 0
        self._cond = threading.Condition()
        self._active = 0
        self._busy_since = 0.0
        self._busy_total = 0.0

    @property
    def busy_seconds(self) -> float:
        with self._cond:
            running = time.perf_counter() - self._busy_since if self._active else 0.0
            return self._busy_total + running

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around one generate call: admitted after any pending load in finish mode."""
        with self._cond:
            if not self.interrupt:
                self._cond.wait_for(lambda: self.pending_loads == 0)
            if self._active == 0:
                self._busy_since = time.perf_counter()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._busy_total += time.perf_counter() - self._busy_since
                    self._cond.notify_all()

    @contextmanager
    def load(self) -> Iterator[None]:
        """Around applying new weights: in finish mode, once no call is in flight."""
        if self.interrupt:
            yield
            return
        with self._cond:
            self.pending_loads += 1
            self._cond.wait_for(lambda: self._active == 0)
        try:
            yield
        finally:
            with self._cond:
                self.pending_loads -= 1
                self._cond.notify_all()
