"""`jetrl chaos`: the command line, and running a plan's trials one after the other on one stack.

    jetrl chaos                                     12 trials, a random service killed in each
    jetrl chaos --trials 47 --faults kill nats=3 db=2 worker=2 --out chaos-results   the full suite
    jetrl chaos --seed 7 --only 3                   trial 3 of seed 7's plan again, alone

Exit status 0 when every trial passed (completed with every invariant; a fault whose moment
never came because the run ended first passes, and is counted), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from jetrl.chaos.plan import FAULT_KINDS, KILL, SPEC_KINDS, ChaosConfig, TrialPlan, make_plan, parse_faults

if TYPE_CHECKING:  # the stack, trials and report load grpc, torch and sqlalchemy: only when it runs
    from jetrl.chaos.stack import ChaosStack
    from jetrl.chaos.trial import TrialResult

__all__ = ["add_arguments", "run", "run_trials", "tiny_model"]

BOOTSTRAP_STEPS = 60  # a very short warm-up, as the e2e tests' model: fast to make, answers something


def add_arguments(p: argparse.ArgumentParser) -> None:
    defaults = ChaosConfig()
    p.add_argument("--trials", type=int, default=defaults.trials, help=f"trials in all (default {defaults.trials})")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of the plan (default 0)")
    p.add_argument(
        "--faults",
        nargs="+",
        default=[KILL],
        metavar="KIND[=N]",
        help=f"fault kinds: {KILL} (a random service) {' '.join(FAULT_KINDS)}; KIND=N gives exactly N "
        "trials, the rest are shared evenly among the kinds without N (default: kill)",
    )
    p.add_argument(
        "--specs",
        nargs="+",
        choices=SPEC_KINDS,
        default=list(SPEC_KINDS),
        help="spec kinds, shared evenly (default: sync async april)",
    )
    p.add_argument(
        "--outage-s",
        type=float,
        default=defaults.outage_s,
        help=f"length of a Postgres outage (default {defaults.outage_s:g})",
    )
    p.add_argument(
        "--max-restart-delay-s",
        type=float,
        default=defaults.max_restart_delay_s,
        help=f"a killed process comes back after 0..this (default {defaults.max_restart_delay_s:g})",
    )
    p.add_argument("--steps", type=int, default=defaults.steps, help=f"versions per run (default {defaults.steps})")
    p.add_argument(
        "--run-timeout-s",
        type=float,
        default=defaults.run_timeout_s,
        help=f"a run still RUNNING this long after its fault is a stall (default {defaults.run_timeout_s:g})",
    )
    p.add_argument("--only", type=int, nargs="+", metavar="I", help="run only these trials of the plan")
    p.add_argument("--model", type=Path, help="a starting checkpoint (default: a tiny one made for the session)")
    p.add_argument("--out", type=Path, help="write chaos.json, chaos.md and the services' logs here")


def config_from(args: argparse.Namespace) -> ChaosConfig:
    return ChaosConfig(
        trials=args.trials,
        seed=args.seed,
        faults=parse_faults(args.faults),
        specs=tuple(args.specs),
        outage_s=args.outage_s,
        max_restart_delay_s=args.max_restart_delay_s,
        steps=args.steps,
        run_timeout_s=args.run_timeout_s,
        out=args.out,
    )


def tiny_model(out: Path) -> Path:
    from jetrl.chaos.trial import HELDOUT
    from jetrl.policy.bootstrap import bootstrap
    from jetrl.spec_sections import TaskSpec

    bootstrap(out, TaskSpec(heldout_size=HELDOUT), steps=BOOTSTRAP_STEPS)
    return out


async def run_trials(
    stack: ChaosStack, config: ChaosConfig, plans: list[TrialPlan], on_result: Callable[[TrialResult], None]
) -> list[TrialResult]:
    from jetrl.chaos.trial import run_trial

    results = []
    for plan in plans:
        results.append(result := await run_trial(stack, config, plan))
        on_result(result)
    return results


def run(args: argparse.Namespace) -> int:
    from jetrl.bench.report import show
    from jetrl.chaos.report import console, progress_line, rich_table, summary, write
    from jetrl.chaos.stack import chaos_stack

    try:
        config = config_from(args)
    except ValidationError as exc:
        console.print(f"[red]jetrl chaos:[/red] {exc}")
        return 2
    plans = make_plan(config)
    if args.only:
        plans = [p for p in plans if p.index in set(args.only)]
    with tempfile.TemporaryDirectory(prefix="jetrl-chaos-") as tmp:
        model = args.model
        if model is None:
            with console.status("making the tiny starting checkpoint…"):
                model = tiny_model(Path(tmp) / "tiny-arith")
        logs = config.out / "logs" if config.out else None
        with chaos_stack(model.resolve(), logs_to=logs) as stack:
            results = asyncio.run(
                run_trials(stack, config, plans, lambda r: console.print(progress_line(r, config.trials)))
            )
    show(rich_table(results, config))
    if config.out:
        write(config.out, results, config)
        console.print(f"results in {config.out / 'chaos.json'} and {config.out / 'chaos.md'}, logs in {logs}")
    console.print(summary(results))
    return 0 if all(r.passed for r in results) else 1
