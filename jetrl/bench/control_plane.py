"""`jetrl bench control-plane`: what the pipeline itself costs, with engines that cost nothing.

The four REAL services, their nats-server and Postgres run on one private stack (jetrl/bench/
stack.py); only the engines are free: the simulated rollout engine (svc_rollout/simulated.py)
decodes a fixed `--length` tokens per sample at 1e-5 s a step, the simulated trainer
(svc_trainer/simulated.py) sleeps 0 s a step. What remains is the control plane: the bus,
lineage, scheduling, rewards, the trainer's weight publishing. Each worker generates up to
`--rollout-concurrency` tasks at once (Settings.rollout_concurrency). One run per `--workers`
count, in increasing order on the same stack: the extra rollout workers (svc_rollout-2, ...) are
started between runs and stay (one stack, so no start-up paid per count). Before each measured
run a short unmeasured one (WARM_UP_STEPS versions) on the same workers pays what a process
pays once (imports, the trainer's first model load: seconds, during which the pipeline would
fill up and its first measured versions would then only drain the backlog).

Per run, from lineage (control_plane_rows.py; every timestamp is Postgres now(), the start of
the transaction that wrote the row, in the scheduler's recorder):

    samples/s      samples trained into versions (warmup, last], over the seconds from the
                   announcement (PolicyVersion.created_at) of version `warmup` to the last's
    overhead       per version v of that window: v's announcement minus the newest
                   Sample.created_at of the samples v trained on (recorded, not generated:
                   lineage has no generation time); split at v's batch row (Batch.created_at)
                   into "last sample -> sealed" and "sealed -> announced"
    CPU s          per process over the run (control_plane_procs.py), also per 1,000 samples

After the runs, raw JetStream on the same nats-server (control_plane_raw.py): publish and
pull-consume rates for a real Sample of the run; e2e samples/s / raw rate is the figure that
should hold across machines. Output: control_plane_report.py.

    jetrl bench control-plane [--workers 1 2 4] [--steps 16] [--profile DIR] ...
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from jetrl.bench.options import add_output
from jetrl.config import RunSpec, Settings

if TYPE_CHECKING:
    from jetrl.bench.stack import RunRecord

__all__ = ["add_arguments", "run", "cp_spec", "measure_run"]

WORKER = "svc_rollout"  # the stack's own worker; the extra ones are svc_rollout-2, -3, ...
CAPACITY = 1_000_000  # sequences the simulated engine decodes together: never the limit
DECODE_STEP_S = 1e-5  # the simulation's smallest sensible step (it must be > 0)
MAX_CONCURRENT = 1024  # groups in flight at most: staleness, not this cap, limits admission
SERVING_TIMEOUT_S = 180.0  # an extra worker loads torch on a busy machine
WARM_UP_STEPS = 2  # the unmeasured run before each measured one


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="rollout worker counts (default 1 2 4)")
    p.add_argument("--steps", type=int, default=16, help="versions per run (default 16)")
    p.add_argument("--warmup", type=int, default=2, help="versions before the steady-state window (default 2)")
    p.add_argument("--batch-groups", type=int, default=32, help="B: groups per batch (default 32)")
    p.add_argument("--group-size", type=int, default=8, help="G: samples per group (default 8)")
    p.add_argument("--length", type=int, default=8, help="completion tokens of every sample (default 8)")
    p.add_argument("--max-staleness", type=int, default=4, help="η: schedule.max_staleness (default 4)")
    p.add_argument(
        "--rollout-concurrency", type=int, default=512, help="tasks one worker generates at once (default 512)"
    )
    p.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    raw = p.add_argument_group("raw JetStream, on the same nats-server after the runs")
    raw.add_argument("--raw-messages", type=int, default=20_000, help="messages published, then consumed (20000)")
    raw.add_argument("--raw-window", type=int, default=256, help="publishes in flight; fetch size (default 256)")
    out = add_output(p, "results JSON (default DIR/control_plane.json)", 600.0)
    out.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy every service during each run: DIR/<service>-w<N>.txt collapsed stacks, DIR/summary-w<N>.txt",
    )


def cp_spec(args: argparse.Namespace, workers: int, model_dir: Path, warm_up: bool = False) -> RunSpec:
    """The run spec of one worker count: fixed-length completions, a trainer that does no work;
    `warm_up`: the short unmeasured run before it."""
    from jetrl.bench.sim import HELDOUT

    return RunSpec.model_validate(
        {
            "name": f"bench-control-plane-w{workers}" + ("-warm-up" if warm_up else ""),
            "seed": args.seed,
            "model": {"path": str(model_dir)},
            "task": {"name": "arithmetic", "heldout_size": HELDOUT},
            "rollout": {"group_size": args.group_size, "max_new_tokens": args.length},
            "train": {"steps": WARM_UP_STEPS if warm_up else args.steps, "batch_groups": args.batch_groups},
            "schedule": {"max_staleness": args.max_staleness, "max_concurrent": MAX_CONCURRENT, "eval_every": 0},
            "simulation": {
                "decode_step_s": DECODE_STEP_S,
                "capacity": CAPACITY,
                "length_median": args.length,
                "length_sigma": 0.0,
                "max_length": args.length,
                "train_s_per_token": 0.0,
                "train_s_per_step": 0.0,
            },
        }
    )


def add_workers(settings: Settings, pids: Path, count: int) -> None:
    """Rollout workers svc_rollout-2 .. -`count` beside the stack's, each on a free port, started
    together and waited for; those already there stay. `down` ends them with the rest."""
    from jetrl.cli.stack import start_service
    from jetrl.localstack import free_port
    from jetrl.rpc import wait_serving

    started = {}
    for k in range(2, count + 1):
        if not (pids / f"{WORKER}-{k}.pid").exists():
            started[f"{WORKER}-{k}"] = addr = f"127.0.0.1:{free_port()}"
            start_service(settings, WORKER, listen=addr, name=f"{WORKER}-{k}")

    async def serving() -> None:
        for name, addr in started.items():
            await wait_serving(addr, settings, timeout=SERVING_TIMEOUT_S, what=name)

    asyncio.run(serving())


def measure_run(
    settings: Settings, args: argparse.Namespace, workers: int, model_dir: Path, py_spy_exe: str | None
) -> tuple[RunRecord, dict[str, float]]:
    """One run with `workers` rollout workers: its record and each process's CPU seconds during it."""
    from jetrl.bench.control_plane_procs import cpu_delta, cpu_snapshot, profiling
    from jetrl.bench.stack import follow_all

    pids = settings.data_dir.resolve() / "pids"
    add_workers(settings, pids, workers)
    title = f"jetrl bench control-plane: {workers} rollout worker(s)"
    follow_all(settings, title, [("warm-up", cp_spec(args, workers, model_dir, warm_up=True))], args.timeout)
    profiler = profiling(py_spy_exe, args.profile, pids, workers) if py_spy_exe else nullcontext()
    before = cpu_snapshot(pids)
    with profiler:
        [record] = follow_all(settings, title, [(f"w{workers}", cp_spec(args, workers, model_dir))], args.timeout)
    return record, cpu_delta(before, cpu_snapshot(pids))


def run(args: argparse.Namespace) -> int:
    """Every worker count, then raw JetStream, on one private stack; 0 when every run completed."""
    from jetrl.bench.control_plane_procs import py_spy
    from jetrl.bench.control_plane_raw import raw_jetstream
    from jetrl.bench.control_plane_report import report
    from jetrl.bench.control_plane_rows import read_versions, result_row
    from jetrl.bench.sim import make_model_dir
    from jetrl.bench.stack import bench_database_url, private_stack

    if args.steps <= args.warmup:
        raise SystemExit(f"--steps ({args.steps}) must exceed --warmup ({args.warmup}): the window would be empty")
    if min(args.workers) < 1:
        raise SystemExit("--workers: every count must be at least 1")
    py_spy_exe = py_spy() if args.profile else None  # before the runs, not after them
    counts = sorted(set(args.workers))
    database_url = bench_database_url(args, Settings())
    with private_stack(
        database_url, args.logs, rollout_concurrency=args.rollout_concurrency, torch_threads=1
    ) as settings:
        model_dir = make_model_dir(settings.data_dir / "models" / "bench-tiny", args.length)
        measured = [(n, *measure_run(settings, args, n, model_dir, py_spy_exe)) for n in counts]
        raw = raw_jetstream(settings, [r.run_id for _, r, _ in measured], args.raw_messages, args.raw_window)
    rows = [
        result_row(n, record, cpu, read_versions(database_url, record.run_id), args.warmup, raw)
        for n, record, cpu in measured
    ]
    report(args, rows, raw)
    return 0 if all(r["state"] == "COMPLETED" for r in rows) else 1
