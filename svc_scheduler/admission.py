"""When groups may start, when they must stop: staleness-bounded admission (AReaL) and APRIL.

With batch size B groups, trained version v, `accepted` groups done generating and `running`
still generating,
AReaL lets a new group start only while

    min(max_concurrent - running, (η + v + 1)·B - (accepted + running)) > 0,

i.e. the groups still *needed* by the batches that may be sealed before the trainer moves on,
need = (η + v + 1)·B - accepted (capped by the run's length), bound what is in flight. APRIL
over-samples the batch being generated: up to max(need, ⌈ρ·min(need, B)⌉) groups in flight
(⌈ρ·need⌉ in a synchronous loop, where one batch is open), and once nothing more is needed
(need = 0) every group still generating is aborted; its partial samples wait in the buffer and
are served first when groups may start again. ρ = 1 is AReaL's rule exactly, and never aborts.

What APRIL may waste: an abort reaches a worker a moment after it is decided (or, after a crash,
once the scheduler is back), and a spare that completes meanwhile is complete. Spares of an
earlier batch fill the next one (or expire, too old for it); of the last batch's ⌈ρ·B⌉ in
flight, up to ⌈ρ·B⌉ - B may complete that no batch trains. Resumed groups make that likely:
their prefixes leave little to generate.

Batches take the oldest complete groups, so a slow group can land in a later batch than its
admission order suggests; the trainer masks any token older than η versions (the last guard of
the bound), with `stale_partials: regenerate` a resumed prefix that is already too old for the
next batch is generated again instead, and a complete group with no token young enough expires
(it would train nothing) and stops counting as accepted, so a fresh group takes its place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Admission:
    max_staleness: int  # η
    batch_groups: int  # B
    max_concurrent: int
    total_steps: int
    over_provision: float = 1.0  # ρ
    # `schedule.stale_partials: regenerate`: a resumed prefix lagging more than this many versions
    # (ScheduleSpec.recycled_bound) is generated again; None: kept, its stale tokens masked
    regenerate_after_lag: int | None = None

    def needed(self, version: int, accepted: int) -> int:
        """Groups still to complete for the batches version `version` may have sealed ahead of it."""
        open_steps = min(self.max_staleness + version + 1, self.total_steps)
        return max(0, open_steps * self.batch_groups - accepted)

    def in_flight_bound(self, version: int, accepted: int) -> int:
        """Groups that may be generating at once: the ones still needed, and at least ρ times
        those the next batch still needs (APRIL over-samples a step's batch). With one batch open
        (η = 0) that is ⌈ρ·needed⌉; with more (η > 0) spares start only as the staleness bound
        nears, where the loop would otherwise wait for its slowest groups: spares for every open
        batch would start groups that finish too late to train (older than η), not sooner."""
        need = self.needed(version, accepted)
        return max(need, math.ceil(self.over_provision * min(need, self.batch_groups)))

    def slots(self, version: int, accepted: int, running: int) -> int:
        """How many groups may start (or resume) now; never negative."""
        by_need = self.in_flight_bound(version, accepted) - running
        return max(0, min(self.max_concurrent - running, by_need))

    def must_abort(self, version: int, accepted: int, generating: int) -> bool:
        """Abort the groups still generating: every group the open batches need is complete."""
        return generating > 0 and self.needed(version, accepted) == 0

    def stale_before(self, batches_sealed: int) -> int | None:
        """With `regenerate`: prefixes with a token older than this version are generated again.

        A resumed group joins batch `batches_sealed` at the earliest, trained at that version.
        """
        return None if self.regenerate_after_lag is None else batches_sealed - self.regenerate_after_lag
