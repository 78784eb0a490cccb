"""`jetrl bench async`: synchronous vs asynchronous training and APRIL, side by side in one run.

The REAL services (scheduler, rollout worker, reward, trainer, each its own process) run on a
private stack: their own nats-server and free ports, a fresh data dir under a temp dir, and a
database of their own (`jetrl_bench` on the JETRL_DATABASE_URL server), so a running stack is
never disturbed; the bench ends exactly the processes it started. Only the hardware is
simulated (run spec `simulation`: svc_rollout/simulated.py, svc_trainer/simulated.py), so the
configurations differ only in scheduling. They run one after the other on the same stack:

    sync         η=0, ρ=1    the synchronous loop
    sync-april   η=0, ρ=2    APRIL over-provisioning, synchronous (recycled prefixes masked: η = 0)
    sync-april-r1  η=0, ρ=2  the same, recycled prefixes one version old trained (APRIL's practice)
    async-N      η=N, ρ=1    AReaL bounded staleness, N in 1 2 4 8
    async-april  η=4, ρ=2    both

    jetrl bench async [--configs sync async-4 ...] [--steps 16] [--batch-groups 4] ...
    jetrl bench async --real [--seeds 0 1] [--target 0.65]   # the tiny policy on CPU, η=0 vs η=2

It writes under --out DIR (default $JETRL_DATA_DIR/bench): async_bench.json and the plot
img/async_bench.png; --real: async_bench_real.json. `--out docs` in a checkout rewrites the
results docs/benchmarks.md shows.

This module is the command line; the suites are jetrl/bench/sim.py and real.py, the stack and
run-following they share stack.py, the formulas metrics.py, the output report.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jetrl.bench.configs import CONFIGS, TRAIN_S_PER_TOKEN
from jetrl.bench.options import add_output, add_selection

__all__ = ["add_arguments", "main", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `jetrl bench async` (also benchmarks/async_bench.py). The simulated-hardware
    defaults make a trainer-bound pipeline whose lognormal length tail stalls the synchronous
    loop: a batch of 32 samples waits for its longest (about 300 tokens, 1.5 s of decoding) while
    the trainer needs about 0.8 s for the batch's ~2,000 tokens."""
    add_selection(p, "--configs", CONFIGS, "NAME", "configurations to run, in order")
    p.add_argument("--steps", type=int, help="versions per run (default 16; --real: the demo spec's)")
    p.add_argument("--warmup", type=int, default=2, help="versions before the steady-state window (default 2)")
    p.add_argument("--batch-groups", type=int, default=4, help="B: groups per batch (default 4)")
    p.add_argument("--group-size", type=int, default=8, help="G: samples per group (default 8)")
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=1024,
        help="groups in flight at most (default 1024: staleness, not this cap, limits admission)",
    )
    p.add_argument("--seed", type=int, default=0, help="run seed, the same for every configuration")
    sim = p.add_argument_group("simulated hardware (run spec `simulation`)")
    sim.add_argument("--decode-step-s", type=float, default=0.005, help="seconds per decode step (default 0.005)")
    sim.add_argument("--capacity", type=int, default=512, help="sequences decoded together (default 512)")
    sim.add_argument("--length-median", type=float, default=40.0, help="median completion tokens (default 40)")
    sim.add_argument("--length-sigma", type=float, default=1.0, help="lognormal σ: the long tail (default 1.0)")
    sim.add_argument("--max-length", type=int, default=512, help="completion cap (default 512)")
    sim.add_argument(
        "--scenario",
        choices=sorted(TRAIN_S_PER_TOKEN),
        default="trainer-bound",
        help="trainer-bound (default): the trainer takes about half of a synchronous step; "
        "generation-bound: 8x faster training, so generation is over 90%% of a synchronous step "
        "(APRIL's regime). It sets the default of --train-s-per-token",
    )
    sim.add_argument(
        "--train-s-per-token", type=float, help="trainer s/token (default by --scenario: 0.0004 or 0.00005)"
    )
    sim.add_argument("--train-s-per-step", type=float, default=0.0, help="trainer s/step (default 0)")
    sim.add_argument(
        "--rollout-concurrency",
        type=int,
        default=512,
        help="tasks the rollout worker generates at once (default 512: the engine batches them)",
    )
    real = p.add_argument_group("--real: the tiny policy on CPU, the demo's spec (jetrl/examples/arithmetic.yaml)")
    real.add_argument("--real", action="store_true", help="η=0 vs η=2 on the real demo instead of simulated hardware")
    real.add_argument("--seeds", type=int, nargs="+", default=[0], help="run seeds (default 0)")
    real.add_argument("--etas", type=int, nargs="+", default=[0, 2], help="staleness bounds to compare (default 0 2)")
    real.add_argument(
        "--target",
        type=float,
        default=0.65,
        help="held-out accuracy target (default 0.65: the demo's plateau, README Results)",
    )
    out = add_output(p, "results JSON (default DIR/async_bench.json; --real: DIR/async_bench_real.json)", 900.0)
    out.add_argument("--plot", type=Path, help="throughput plot (default DIR/img/async_bench.png; not with --real)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="async_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(p)
    return run(p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the suite `args` asks for; 0 when every run completed."""
    if args.real:
        from jetrl.bench.real import run_real

        return run_real(args)
    from jetrl.bench.sim import run_simulated

    return run_simulated(args)
