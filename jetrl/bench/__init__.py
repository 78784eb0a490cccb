"""Benchmarks on a private stack: `jetrl bench async`, `rewards`, `control-plane` and `peer`.

    async_cli.py             `jetrl bench async`: its options and the configurations compared
    sim.py                   its simulated-hardware suite: sync, APRIL, async η, the ideal bound
    real.py                  its --real suite: the tiny policy on CPU, time to the demo's accuracy
    metrics.py               ideal bound, steady-state window, metrics read back from lineage
    report.py                tables, JSON, markdown and plots; where the outputs go (--out)
    rewards.py               `jetrl bench rewards`: verify vs label-free rewards, grpo vs mc_grpo at G = 2
    rewards_arms.py          its arms, options, version 0's checkpoint and each arm's spec
    rewards_v0.py            version 0's vote diagnostics, in process
    rewards_metrics.py       pseudo-label accuracy from lineage, summary over seeds
    rewards_report.py        its tables, plot and the experiment's criterion as measured
    control_plane.py         `jetrl bench control-plane`: the real services with free engines, per worker count
    control_plane_rows.py    its lineage timestamps and figures: samples/s, per-version overhead
    control_plane_procs.py   CPU seconds per process from /proc, py-spy profiles (--profile)
    control_plane_raw.py     raw JetStream publish and pull-consume rates on the same nats-server
    control_plane_report.py  its tables, JSON, markdown and the issue's targets as measured
    peer.py                  `jetrl bench peer`: the demo's RL phase on jetrl vs TRL's GRPOTrainer, per seed and η
    peer_jetrl.py            its jetrl arms: the demo's spec per seed and η, wall time and its split from lineage
    peer_trl.py              its TRL arm, a process of its own: GRPOConfig matched to the spec, evaluation callback
    peer_procs.py            peak RSS (VmHWM) of a bench's processes, reset before each run
    peer_report.py           its tables, the issue's criteria as measured, the differences between the arms
    options.py               the options the async and rewards benches declare alike (which configurations or arms)
    stack.py                 the private stack (also `jetrl chaos`'s) and following runs on it

Every output goes under `--out DIR`, by default $JETRL_DATA_DIR/bench (`.jetrl/bench` under the
working directory when JETRL_DATA_DIR is not set); `--out docs` in a checkout rewrites the
results committed there. Plots need matplotlib, the `bench` extra: pip install 'jetrl[bench]'; `peer`
needs TRL, the `peer` extra: pip install 'jetrl[peer]'.

This module is what the `jetrl` command sees (jetrl/cli/main.py imports it only to build its
parser and to run a bench); the suites are imported when one runs.
"""

from __future__ import annotations

import argparse

__all__ = ["add_commands", "run"]


def add_commands(bench: argparse.ArgumentParser) -> None:
    """`jetrl bench`'s subcommands (`async`, `rewards`, `control-plane`, `peer`) on its parser."""
    from jetrl.bench import async_cli, control_plane, peer, rewards, rewards_arms

    sub = bench.add_subparsers(dest="benchmark", required=True)
    for name, options, summary, description in [
        ("async", async_cli, "sync vs async training and APRIL, side by side", async_cli.__doc__),
        ("rewards", rewards_arms, "rewards with and without labels, grpo vs mc_grpo", rewards.__doc__),
        ("control-plane", control_plane, "the pipeline's own cost: free engines, 1..N workers", control_plane.__doc__),
        ("peer", peer, "the demo's RL phase on jetrl vs TRL's GRPOTrainer, same version 0", peer.__doc__),
    ]:
        options.add_arguments(
            sub.add_parser(
                name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
            )
        )


def run(args: argparse.Namespace) -> int:
    """Run the bench `args.benchmark` names; 0 when every run completed."""
    if args.benchmark == "rewards":
        from jetrl.bench.rewards import run as run_rewards

        return run_rewards(args)
    if args.benchmark == "peer":
        from jetrl.bench.peer import run as run_peer

        return run_peer(args)
    if args.benchmark == "control-plane":
        from jetrl.bench.control_plane import run as run_control_plane

        return run_control_plane(args)
    from jetrl.bench.async_cli import run as run_async

    return run_async(args)
