"""The configurations `jetrl bench async` compares: synchronous, APRIL, and asynchronous at each η."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BenchConfig", "CONFIGS"]


@dataclass(frozen=True)
class BenchConfig:
    name: str
    max_staleness: int  # η
    over_provision: float  # ρ


CONFIGS = {
    c.name: c
    for c in [
        BenchConfig("sync", 0, 1.0),
        BenchConfig("sync-april", 0, 2.0),
        *(BenchConfig(f"async-{eta}", eta, 1.0) for eta in (1, 2, 4, 8)),
        BenchConfig("async-april", 4, 2.0),
    ]
}
