"""What a chaos session will do, decided up front from its seed: which spec and which fault each
trial gets, at which moment, and how long the fault lasts.

The plan is drawn before anything starts, so a seed names the same trials on any machine (only
the outcomes may differ) and `--only` can replay one trial of a plan exactly.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SPEC_KINDS", "FAULT_KINDS", "KILL", "ChaosConfig", "TrialPlan", "make_plan", "parse_faults"]

SpecKind = Literal["sync", "async", "april"]
SPEC_KINDS: tuple[SpecKind, ...] = get_args(SpecKind)
# kill-<service>: SIGKILL, restart after a delay. nats: the broker SIGKILLed and restarted on its
# port with its store. db: Postgres stopped (immediate) for `outage_s`. worker: a second rollout
# worker started before the run and SIGKILLed at the moment, never restarted.
FaultKind = Literal["kill-scheduler", "kill-rollout", "kill-reward", "kill-trainer", "nats", "db", "worker"]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
KILLS = tuple(k for k in FAULT_KINDS if k.startswith("kill-"))
KILL = "kill"  # on the command line: a service drawn at random, the four in turn


def _kills_only() -> dict[str, int | None]:
    """The default `faults`: `kill` in all the trials."""
    return {KILL: None}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChaosConfig(_Model):
    """A chaos session: how many trials of what, and the knobs every trial shares."""

    trials: int = Field(12, ge=1, le=10_000)
    """Trials in all (faults given with a count are part of them)."""
    seed: int = Field(0, ge=0)
    """Seed of the plan: specs, faults, moments, delays."""
    faults: dict[str, int | None] = Field(default_factory=_kills_only)
    """Fault kind (FAULT_KINDS, or `kill`) -> exact number of trials, or None: the trials left
    over are shared evenly among the kinds without a count."""
    specs: tuple[SpecKind, ...] = SPEC_KINDS
    """Spec kinds, shared evenly among the trials."""
    outage_s: float = Field(30.0, gt=0.0, le=3600.0)
    """Length of a Postgres outage."""
    max_restart_delay_s: float = Field(10.0, ge=0.0, le=600.0)
    """A killed service or broker comes back after a delay drawn from [0, this]."""
    steps: int = Field(30, ge=3, le=1000)
    """Versions per run. The tiny model makes one in about 0.3 s on two cores (APRIL's paced
    engines in about 1 s), so a run takes 10-40 s before its fault costs anything."""
    max_moment_delay_s: float = Field(1.0, ge=0.0, le=600.0)
    """The fault lands this long (drawn from [0, this]) after its version appears: a random point
    inside the pipeline's cycle, not only at the announcement of a version."""
    run_timeout_s: float = Field(240.0, gt=0.0, le=86_400.0)
    """After the fault is over, a run still RUNNING this much later is a stall."""
    out: Path | None = None
    """Where the JSON, the markdown table and the services' logs go."""

    @model_validator(mode="after")
    def _known(self) -> ChaosConfig:
        unknown = set(self.faults) - {*FAULT_KINDS, KILL}
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {KILL} {' '.join(FAULT_KINDS)}")
        counted = sum(n for n in self.faults.values() if n)
        if counted > self.trials:
            raise ValueError(f"the fault counts add up to {counted}, more than --trials {self.trials}")
        if counted < self.trials and all(n is not None for n in self.faults.values()):
            raise ValueError(
                f"the fault counts add up to {counted} of {self.trials} trials and no kind "
                "is left without a count to take the rest"
            )
        if not self.specs:
            raise ValueError("give at least one spec kind")
        return self


def parse_faults(items: list[str]) -> dict[str, int | None]:
    """`kill nats=3 db=2` -> {"kill": None, "nats": 3, "db": 2} (the command line's --faults)."""
    faults: dict[str, int | None] = {}
    for item in items:
        kind, _, count = item.partition("=")
        faults[kind] = int(count) if count else None
    return faults


class TrialPlan(_Model):
    """One trial, fully decided: a run of `spec`, and `fault` when version `at_version` has
    appeared and `after_s` more seconds have passed (a version in the first two thirds of the
    run, so the fault lands before the end)."""

    index: int
    seed: int  # the run spec's seed (prompt order, sampling)
    spec: SpecKind
    max_staleness: int  # η; APRIL draws 0 or 1
    fault: FaultKind
    at_version: int
    after_s: float
    restart_delay_s: float  # kills and the broker: down this long; db: the outage's length

    def moment(self) -> str:
        return f"v{self.at_version}+{self.after_s:.1f}s"

    def fault_label(self) -> str:
        down = (
            ""
            if self.fault == "worker"
            else f", {'outage' if self.fault == 'db' else 'restart after'} {self.restart_delay_s:.1f}s"
        )
        return f"{self.fault}{down}"


def _spread(kinds: list, n: int, rng: random.Random) -> list:
    """n items, as even a share of each kind as n allows, in a random order."""
    out = (kinds * math.ceil(n / len(kinds)))[:n] if kinds else []
    rng.shuffle(out)
    return out


def make_plan(config: ChaosConfig) -> list[TrialPlan]:
    rng = random.Random(config.seed)
    counted = [k for k, n in config.faults.items() if n for _ in range(n)]
    free = [k for k, n in config.faults.items() if n is None]
    faults = counted + _spread(free, config.trials - len(counted), rng)
    rng.shuffle(faults)
    services = iter(_spread(list(KILLS), faults.count(KILL), rng))
    faults = [next(services) if f == KILL else f for f in faults]
    specs = _spread(list(config.specs), config.trials, rng)
    plans = []
    for i, (fault, spec) in enumerate(zip(faults, specs)):
        plans.append(
            TrialPlan(
                index=i,
                seed=rng.randrange(1_000_000),
                spec=spec,
                max_staleness={"sync": 0, "async": 2, "april": rng.choice((0, 1))}[spec],
                fault=fault,
                at_version=rng.randrange(2 * config.steps // 3),  # the last third is room to land
                after_s=round(rng.uniform(0.0, config.max_moment_delay_s), 1),
                restart_delay_s=(
                    config.outage_s if fault == "db" else round(rng.uniform(0.0, config.max_restart_delay_s), 1)
                ),
            )
        )
    return plans
