# argparse prints this docstring as it is (RawDescriptionHelpFormatter): the formatter must keep its indent.
# fmt: off
"""The `jetrl` command.

  jetrl up [--rewards]     start NATS (if none), migrate Postgres, start the four services (and the reward servers)
  jetrl bootstrap          make the tiny starting checkpoint under $JETRL_DATA_DIR/models/tiny-arith
  jetrl run SPEC           submit a run spec and follow it live
  jetrl demo               all of it: up, bootstrap, run examples/arithmetic.yaml, report, down
  jetrl status             health of the services and the known runs
  jetrl runs               the runs the scheduler knows: state, version, held-out accuracy, samples, age
  jetrl watch RUN          re-attach to a run's live progress until it ends (exit 0: COMPLETED)
  jetrl stop RUN           stop a running run (--reason TEXT)
  jetrl report RUN         a static HTML page of the run's curves and spec, from lineage (--out FILE)
  jetrl explain SAMPLE     one sample: versions per token, segments, rewards, training, trace link
  jetrl down               stop what `jetrl up` started
  jetrl generate RUN P...  sample from a running run's current policy (greedy by default)
  jetrl export RUN OUT_DIR a run's version (--version N, default the newest) as a Hugging Face model directory
  jetrl db upgrade         create and migrate the lineage database
  jetrl reward check ADDR  check any RewardService against the Reward contract
  jetrl bench async        sync vs async training and APRIL on simulated hardware (--real: the demo on CPU)
  jetrl bench rewards      verify vs label-free rewards (majority, co_reward, teacher); grpo vs mc_grpo at G = 2
  jetrl bench control-plane  what the loop itself costs: free engines, 1 2 4 rollout workers, raw JetStream beside it
  jetrl bench peer         the demo's RL phase against TRL's GRPOTrainer, same version 0 (the `peer` extra)
  jetrl chaos              randomized fault trials on a private stack, invariants checked from lineage
  jetrl nats config|secrets FILE|declare   NATS users per service role, their passwords, the streams
"""
# fmt: on

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from jetrl.config import Settings, SpecError, load_spec
from jetrl.examples import DEMO_SPEC

# The checkout this module sits in; only a checkout has one (the tests use it). What an installed
# package needs ships inside it: the demo's spec is jetrl/examples/arithmetic.yaml (DEMO_SPEC).
REPO = Path(__file__).resolve().parents[2]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jetrl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local stack")
    up.add_argument(
        "--rewards",
        action="store_true",
        help="also start the majority, co_reward, teacher and process reward servers (:50055-:50058)",
    )
    sub.add_parser("down", help="stop the local stack")
    sub.add_parser("status", help="service health and runs")
    sub.add_parser("runs", help="list the runs the scheduler knows")
    watch = sub.add_parser("watch", help="re-attach to a run's live progress")
    watch.add_argument("run_id", metavar="RUN")
    stop = sub.add_parser("stop", help="stop a running run")
    stop.add_argument("run_id", metavar="RUN")
    stop.add_argument("--reason", default="", help="why; kept as the run's message (default: stopped by request)")
    report = sub.add_parser("report", help="a static HTML page of a run's curves and spec, from lineage")
    report.add_argument("run_id", metavar="RUN")
    report.add_argument("--out", type=Path, help="the page (default ./RUN.html)")
    explain = sub.add_parser("explain", help="one sample's story from lineage")
    explain.add_argument("sample_id", metavar="SAMPLE_ID")
    boot = sub.add_parser("bootstrap", help="make the tiny starting checkpoint")
    boot.add_argument("--out", type=Path, help="model directory (default $JETRL_DATA_DIR/models/tiny-arith)")
    boot.add_argument("--force", action="store_true", help="rebuild even if it exists")
    run = sub.add_parser("run", help="submit a run spec and watch it")
    run.add_argument("spec", type=Path)
    run.add_argument("--run-id", default="")
    run.add_argument("--detach", action="store_true", help="submit and return")
    demo = sub.add_parser("demo", help="up, bootstrap, run the example, report, down")
    demo.add_argument(
        "--spec",
        type=Path,
        default=DEMO_SPEC,
        help="run spec (default: the demo's, shipped in the package: jetrl/examples/arithmetic.yaml)",
    )
    demo.add_argument("--keep-running", action="store_true", help="leave the stack up afterwards")
    demo.add_argument(
        "--seed",
        type=int,
        help="warm-up initialisation and run seed (default: the spec's seed; another seed gets a version 0 of its own)",
    )
    generate = sub.add_parser("generate", help="sample from a running run's current policy")
    generate.add_argument("run_id", metavar="RUN")
    generate.add_argument("prompts", metavar="PROMPT", nargs="+")
    generate.add_argument("--max-new-tokens", type=int, default=32)
    generate.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    generate.add_argument("--seed", type=int, default=0)
    export = sub.add_parser("export", help="a run's version as a Hugging Face model directory")
    export.add_argument("run_id", metavar="RUN")
    export.add_argument("out", metavar="OUT_DIR", type=Path)
    export.add_argument("--version", type=int, help="policy version (default: the newest published)")
    db = sub.add_parser("db", help="lineage database")
    db.add_argument("action", choices=["upgrade"])
    reward = sub.add_parser("reward", help="reward servers")
    reward_sub = reward.add_subparsers(dest="reward_action", required=True)
    check = reward_sub.add_parser("check", help="check a RewardService against the contract")
    check.add_argument("addr", metavar="HOST:PORT")
    check.add_argument("--deadline-s", type=float, default=10.0, help="deadline of each call (default 10)")
    from jetrl.bench import add_commands as add_bench_commands

    add_bench_commands(sub.add_parser("bench", help="benchmarks on a private stack"))
    from jetrl.cli.nats_config import __doc__ as nats_doc
    from jetrl.cli.nats_config import add_commands as add_nats_commands

    add_nats_commands(
        sub.add_parser(
            "nats",
            help="NATS users per service role, their passwords, the streams",
            description=nats_doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    from jetrl.chaos.runner import __doc__ as chaos_doc
    from jetrl.chaos.runner import add_arguments as add_chaos_arguments

    add_chaos_arguments(
        sub.add_parser(
            "chaos",
            help="randomized fault trials, invariants checked from lineage",
            description=chaos_doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    try:
        if args.command == "up":
            from jetrl.cli.stack import up

            up(settings, rewards=args.rewards)
        elif args.command == "down":
            from jetrl.cli.stack import down

            down(settings)
        elif args.command == "status":
            from jetrl.cli.runs import status

            return 0 if asyncio.run(status(settings)) else 1
        elif args.command == "runs":
            from jetrl.cli.manage import list_runs

            return asyncio.run(list_runs(settings))
        elif args.command == "watch":
            from jetrl.cli.manage import follow

            return asyncio.run(follow(settings, args.run_id))
        elif args.command == "stop":
            from jetrl.cli.manage import stop_run

            return asyncio.run(stop_run(settings, args.run_id, args.reason))
        elif args.command == "report":
            from jetrl.cli.report import main as report

            return asyncio.run(report(settings, args.run_id, args.out))
        elif args.command == "explain":
            from jetrl.cli.explain import main as explain

            return asyncio.run(explain(settings, args.sample_id))
        elif args.command == "bootstrap":
            from jetrl.cli.runs import bootstrap

            bootstrap(settings, args.out, args.force)
        elif args.command == "run":
            from jetrl.cli.runs import submit_and_watch

            spec = load_spec(args.spec)
            return asyncio.run(submit_and_watch(settings, spec, args.spec.read_text(), args.run_id, args.detach))
        elif args.command == "demo":
            from jetrl.cli.demo import demo

            return demo(settings, args.spec, args.keep_running, args.seed)
        elif args.command == "generate":
            from jetrl.cli.generate import main as generate

            return asyncio.run(
                generate(settings, args.run_id, args.prompts, args.max_new_tokens, args.temperature, args.seed)
            )
        elif args.command == "export":
            from jetrl.cli.export import main as export

            return asyncio.run(export(settings, args.run_id, args.version, args.out))
        elif args.command == "db":
            from jetrl.cli.stack import ensure_database

            print(ensure_database(settings))
        elif args.command == "reward":
            from jetrl.cli.reward_check import main as check

            return asyncio.run(check(settings, args.addr, args.deadline_s))
        elif args.command == "bench":
            from jetrl.bench import run as run_bench

            return run_bench(args)
        elif args.command == "nats":
            from jetrl.cli.nats_config import run as run_nats

            return run_nats(args, settings)
        elif args.command == "chaos":
            from jetrl.chaos.runner import run as run_chaos

            return run_chaos(args)
    except SpecError as exc:
        print(f"jetrl: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
