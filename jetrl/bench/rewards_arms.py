"""The arms of `jetrl bench rewards` and how each becomes a run: its options, version 0 (the
starting checkpoint every arm trains) and each arm's spec (jetrl.bench.rewards runs them)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from jetrl.bench.options import add_output, add_selection
from jetrl.config import RunSpec, Settings
from jetrl.spec_sections import TaskSpec

__all__ = ["ARMS", "RECIPES", "Arm", "add_arguments", "arm_spec", "starting_checkpoint", "task_spec"]


@dataclass(frozen=True)
class Arm:
    name: str
    reward: str  # verify | majority | co_reward | teacher
    advantage: str = "grpo"
    group_size: int | None = None  # None: --group-size

    @property
    def labels(self) -> bool:
        return self.reward == "verify"

    @property
    def server(self) -> str | None:
        """The module of the reward server the arm needs beside the stack (verify is the stack's)."""
        return None if self.labels else f"svc_reward.{self.reward}"


ARMS = {
    a.name: a
    for a in [
        Arm("verify", "verify"),
        Arm("majority", "majority"),
        Arm("co_reward", "co_reward"),
        Arm("teacher", "teacher"),
        Arm("grpo-g2", "verify", "grpo", 2),
        Arm("mc_grpo-g2", "verify", "mc_grpo", 3),
    ]
}


# What `--recipe papers` changes from the demo's spec, after the Co-rewarding authors' run scripts
# (docs/rewards.md): a k3 (`low_var_kl`) KL anchor in the loss, to the initial policy at β 0.005
# (Co-rewarding-I's) for every arm but `teacher`, which takes the EMA teacher as its reference at
# β 0.001 (Co-rewarding-II's); a cosine learning rate after 10% warm-up; their slow teacher,
# momentum 0.99 -> 0.99999 updated every version. Their peak rate (3e-6, for models of billions of
# parameters) and batch of 128 questions are not taken: the tiny policy keeps the demo's rate, and
# the batch the bench's --batch-groups.
PAPERS_KL = {"teacher": (0.001, "teacher")}  # reward -> (β, reference); the others below
PAPERS_KL_DEFAULT = (0.005, "initial")
RECIPES = ("demo", "papers")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `jetrl bench rewards` (also benchmarks/rewards_bench.py)."""
    add_selection(p, "--arms", ARMS, "ARM", "arms to run")
    p.add_argument(
        "--recipe",
        choices=RECIPES,
        default="demo",
        help="demo: the demo's hyperparameters, no KL; papers: the Co-rewarding scripts' KL anchor, "
        "cosine schedule with warm-up and slow teacher (docs/rewards.md)",
    )
    p.add_argument(
        "--kl-coef",
        type=float,
        metavar="BETA",
        help="with --recipe papers: β of every arm's KL anchor instead of the papers' (0.005; teacher 0.001)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds (default 0 1 2)")
    p.add_argument("--steps", type=int, default=50, help="versions per run (default 50, as the demo)")
    p.add_argument("--batch-groups", type=int, default=16, help="B: groups per batch (default 16, as the demo)")
    p.add_argument("--group-size", type=int, default=8, help="G of the G = 8 arms, per view (default 8)")
    p.add_argument("--teacher-samples", type=int, default=8, help="G~: the teacher arm's samples (default 8)")
    p.add_argument("--eval-every", type=int, default=5, help="held-out evaluation every N versions (default 5)")
    p.add_argument("--lr", type=float, help="learning rate (default: the demo spec's)")
    task = p.add_argument_group("task and version 0")
    task.add_argument("--digits", type=int, default=1, help="digits per operand (default 1)")
    task.add_argument("--terms", type=int, default=4, help="operands per problem (default 4: `7-2+5+3=`)")
    task.add_argument(
        "--bootstrap-steps",
        type=int,
        default=300,
        help="warm-up steps on correct answers that make version 0 (default 300)",
    )
    task.add_argument(
        "--diag-samples", type=int, default=8, help="samples per prompt of the v0 diagnostics (default 8)"
    )
    task.add_argument(
        "--diag-prompts", type=int, default=200, help="training prompts of the v0 label diagnostics (default 200)"
    )
    out = add_output(p, "results (default DIR/rewards.json)", 900.0)
    out.add_argument("--plot", type=Path, help="accuracy over versions per arm (default DIR/img/rewards.png)")
    out.add_argument(
        "--from-json",
        type=Path,
        metavar="PATH",
        help="run nothing: measure again, from lineage, the runs a previous results file lists "
        "(its arms, seeds and settings), and write the outputs anew",
    )


def task_spec(args: argparse.Namespace) -> TaskSpec:
    return TaskSpec(name="arithmetic", digits=args.digits, terms=args.terms, rephrase="order")


def starting_checkpoint(user: Settings, task: TaskSpec, steps: int, seed: int = 0) -> Path:
    """Version 0: `steps` warm-up steps on correct answers (teacher_error 0), made once and kept
    under the user's JETRL_DATA_DIR/models, keyed by everything that shapes it."""
    from jetrl.bench.stack import console
    from jetrl.policy.bootstrap import bootstrap_with_progress

    key = f"tiny-arith-d{task.digits}t{task.terms}-task{task.seed}-h{task.heldout_size}-steps{steps}-seed{seed}-exact"
    out = user.data_dir.resolve() / "models" / key
    if (out / "bootstrap.json").exists():  # written last: the checkpoint is complete
        console.print(f"version 0 already at {out}")
        return out
    bootstrap_with_progress(out, task, console, steps=steps, seed=seed, teacher_error=0.0)
    return out


def arm_spec(
    base: RunSpec, model_dir: Path, arm: Arm, seed: int, args: argparse.Namespace, servers: dict[str, str]
) -> RunSpec:
    """The demo spec on the bench's task with this arm's reward, estimator and group size.
    `servers`: module -> address of the label-free reward servers."""
    raw = base.model_dump()
    raw["name"] = f"rw-{arm.name.replace('_', '')}-s{seed}"
    raw["seed"] = seed
    raw["model"]["path"] = str(model_dir)
    raw["task"] = task_spec(args).model_dump()
    raw["rollout"].update(group_size=arm.group_size or args.group_size, analogous_view=arm.reward == "co_reward")
    raw["teacher"] = {"samples": args.teacher_samples} if arm.reward == "teacher" else None
    raw["train"].update(steps=args.steps, batch_groups=args.batch_groups, advantage=arm.advantage)
    if args.recipe == "papers":
        beta, reference = PAPERS_KL.get(arm.reward, PAPERS_KL_DEFAULT)
        beta = beta if args.kl_coef is None else args.kl_coef
        raw["train"].update(
            kl_coef=beta, kl_estimator="k3", kl_reference=reference, lr_schedule="cosine", lr_warmup_ratio=0.1
        )
        if raw["teacher"] is not None:
            raw["teacher"].update(ema_start=0.99, ema_end=0.99999, update_every=1)
    if args.lr:
        raw["train"]["lr"] = args.lr
    raw["reward"]["endpoints"] = [{"address": servers[arm.server], "weight": 1.0}] if arm.server else []
    raw["schedule"].update(eval_every=args.eval_every)
    return RunSpec.model_validate(raw)
