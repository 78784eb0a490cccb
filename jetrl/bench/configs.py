"""The configurations `jetrl bench async` compares (synchronous, APRIL, asynchronous at each η) and
its two simulated-hardware scenarios."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BenchConfig", "CONFIGS", "TRAIN_S_PER_TOKEN"]


@dataclass(frozen=True)
class BenchConfig:
    name: str
    max_staleness: int  # η
    over_provision: float  # ρ
    recycled_staleness: int | None = None  # how far a recycled APRIL prefix may lag and be trained; None: η


CONFIGS = {
    c.name: c
    for c in [
        BenchConfig("sync", 0, 1.0),
        BenchConfig("sync-april", 0, 2.0),
        # APRIL's own practice: the synchronous loop, recycled prefixes one version old trained
        BenchConfig("sync-april-r1", 0, 2.0, recycled_staleness=1),
        *(BenchConfig(f"async-{eta}", eta, 1.0) for eta in (1, 2, 4, 8)),
        BenchConfig("async-april", 4, 2.0),
    ]
}

# trainer seconds per token for each scenario: with the default lengths a batch of 32 samples
# waits about 1.5 s for its longest sample; its ~2,000 tokens train in 0.8 s or in 0.1 s
TRAIN_S_PER_TOKEN = {"trainer-bound": 0.0004, "generation-bound": 0.00005}
