"""Staleness-bounded admission (AReaL, DESIGN §4).

With batch size B groups, trained version v, `accepted` groups finished and `running` in flight,
a new group may start only while
    min(max_concurrent - running, (η + v + 1)·B - (accepted + running)) > 0.
Groups are numbered in admission order and group n belongs to step n // B, which is trained at
version n // B; admitting at most (η + v + 1)·B groups therefore bounds every trained token's
staleness by η. With η = 0 this is the synchronous loop: one batch in flight at a time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Admission:
    max_staleness: int      # η
    batch_groups: int       # B
    max_concurrent: int
    total_steps: int

    def slots(self, version: int, accepted: int, running: int) -> int:
        """How many groups may be admitted now (never negative)."""
        by_concurrency = self.max_concurrent - running
        by_staleness = (self.max_staleness + version + 1) * self.batch_groups - (accepted + running)
        by_run_length = self.total_steps * self.batch_groups - (accepted + running)
        return max(0, min(by_concurrency, by_staleness, by_run_length))

    def step_of(self, group_index: int) -> int:
        return group_index // self.batch_groups
