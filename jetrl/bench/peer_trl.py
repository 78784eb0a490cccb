"""The TRL arm of `jetrl bench peer`: the demo's RL phase under TRL's `GRPOTrainer`, in a process
of its own so that its CPU seconds and peak memory are its own.

    python -m jetrl.bench.peer_trl --spec SPEC.yaml --out RESULT.json [--threads N]

SPEC is the jetrl arm's run spec (the demo's, with the seed and step count of the comparison), so
both arms start from the same version-0 directory (model.path) with the same settings. The
matching, field by field (`config_kwargs`): B = 16 prompts × G = 8 samples per step, one generation
batch per optimizer step, max_completion_length = max_new_tokens, temperature and top_p of the
rollout, top_k off; AdamW (torch's, not fused) at the spec's lr, weight decay and torch's betas
and eps (as svc_trainer/engine.py builds it), constant schedule, no warm-up, grad-norm clip;
beta = 0 (no reference model), epsilon = clip_eps_low, epsilon_high = clip_eps_high, one
iteration per batch; loss_type "bnpo": the sum over the batch's completion tokens over their
count, jetrl's token_mean with one minibatch ("dapo" is the same here: one process, no
accumulation); scale_rewards "group": (r - mean) / (unbiased std + 1e-4) within each group
(jetrl: + 1e-6); float32 on CPU (TRL's defaults bf16 and gradient checkpointing off).

The prompts: step k trains problems 16k .. 16k+15 of the task's stream, in order (no shuffle),
each repeated G times: the groups jetrl's scheduler admits for step k at η = 0. The reward: the
verify rule's exact-number part (jetrl.tasks.answers.is_correct), in this process. Evaluation:
a callback computes the greedy held-out accuracy with jetrl.policy.generate (greedy_score, as the
rollout worker's evaluation) at the versions jetrl's scheduler evaluates (0, eval_every, ...,
the last); its time is measured and taken out of the training wall time.

TRL, datasets and accelerate come with the `peer` extra (pip install -e '.[peer]'); this module
imports them only in `train`, so its pure parts load without them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from jetrl.config import RunSpec
from jetrl.tasks import Problem, Task
from jetrl.tasks.answers import is_correct

__all__ = ["config_kwargs", "check_matchable", "train_rows", "verify_rewards", "eval_versions", "HeldoutEval", "main"]

PEER_EXTRA = "the TRL arm needs the `peer` extra of jetrl: pip install -e '.[peer]'"


def check_matchable(spec: RunSpec) -> None:
    """Refuse a spec whose training TRL's GRPOTrainer cannot reproduce (ValueError saying why)."""
    t = spec.train
    refused = {
        "train.advantage must be grpo": t.advantage != "grpo",
        "train.loss_agg must be token_mean": t.loss_agg != "token_mean",
        "train.minibatches must be 1": t.minibatches != 1,
        "train.lr_schedule must be constant": t.lr_schedule != "constant",
        "train.kl_coef must be 0": t.kl_coef != 0,
        "schedule.over_provision must be 1": spec.schedule.over_provision != 1.0,
    }
    wrong = [why for why, bad in refused.items() if bad]
    if wrong:
        raise ValueError("the TRL arm cannot match this spec: " + "; ".join(wrong))


def config_kwargs(spec: RunSpec, output_dir: Path) -> dict[str, Any]:
    """GRPOConfig's arguments for `spec` (the module docstring says how each one matches)."""
    check_matchable(spec)
    t, r = spec.train, spec.rollout
    return {
        "output_dir": str(output_dir),
        "seed": spec.seed,
        "use_cpu": True,
        "bf16": False,
        "fp16": False,
        "gradient_checkpointing": False,
        "max_steps": t.steps,
        "per_device_train_batch_size": t.batch_groups * r.group_size,
        "gradient_accumulation_steps": 1,
        "num_generations": r.group_size,
        "max_completion_length": r.max_new_tokens,
        "temperature": r.temperature,
        "top_p": r.top_p,
        "top_k": 0,
        "learning_rate": t.lr,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "optim": "adamw_torch",
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "adam_epsilon": 1e-8,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.grad_clip,
        "beta": 0.0,
        "epsilon": t.clip_eps_low,
        "epsilon_high": t.clip_eps_high,
        "num_iterations": 1,
        "loss_type": "bnpo",
        "scale_rewards": "group",
        "mask_truncated_completions": False,
        "shuffle_dataset": False,
        "remove_unused_columns": False,
        "report_to": "none",
        "logging_strategy": "no",
        "save_strategy": "no",
        "eval_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def train_rows(task: Task, steps: int, batch_groups: int) -> list[dict[str, str]]:
    """The training set in order: row n is the task's problem n (what jetrl's group n trains on)."""
    return [
        {"prompt": p.prompt, "answer": p.answer} for p in (task.train_problem(n) for n in range(steps * batch_groups))
    ]


def verify_rewards(completions: Sequence[str], answer: Sequence[str], **_: Any) -> list[float | None]:
    """TRL's reward function: 1.0 when a completion's final number is the reference answer."""
    return [1.0 if is_correct(Problem("", "", a), c) else 0.0 for c, a in zip(completions, answer)]


def eval_versions(steps: int, every: int) -> list[int]:
    """The versions jetrl's scheduler evaluates: 0, every multiple of `every` below `steps`, and `steps`."""
    return sorted({0, steps, *(range(every, steps, every) if every else ())})


class HeldoutEval(TrainerCallback):
    """Greedy held-out accuracy at version 0 and after each step in `versions`; `seconds` of a
    version is its step's end after `start`, evaluations taken out (`clock`: wall seconds)."""

    def __init__(self, tokenizer, problems: list[Problem], versions: list[int], max_new_tokens: int, clock=None):
        self.tokenizer, self.problems, self.versions = tokenizer, problems, versions
        self.max_new_tokens = max_new_tokens
        self.clock = clock or time.perf_counter
        self.start = self.clock()
        self.eval_s = self.eval_cpu_s = 0.0
        self.step_s: list[float] = []  # version v was made step_s[v - 1] s after start, evaluations excluded
        self.curve: list[dict[str, float]] = []

    def evaluate(self, model, version: int) -> None:
        from jetrl.policy.generate import heldout_accuracy

        wall, cpu = self.clock(), time.process_time()
        training = model.training
        model.eval()
        accuracy = heldout_accuracy(model, self.tokenizer, self.problems, max_new_tokens=self.max_new_tokens)
        model.train(training)
        seconds = self.step_s[version - 1] if version else 0.0
        self.curve.append({"version": version, "seconds": seconds, "accuracy": accuracy})
        self.eval_s += self.clock() - wall
        self.eval_cpu_s += time.process_time() - cpu

    def on_train_begin(self, args, state, control, **kwargs):
        self.evaluate(kwargs["model"], 0)

    def on_step_end(self, args, state, control, **kwargs):
        self.step_s.append(self.clock() - self.start - self.eval_s)
        if state.global_step in self.versions:
            self.evaluate(kwargs["model"], state.global_step)


def train(spec: RunSpec, work: Path, threads: int) -> dict[str, Any]:
    """Run the TRL arm of `spec`; its figures and curve."""
    import torch
    import trl
    from datasets import Dataset

    from jetrl.bench.peer_procs import own_usage
    from jetrl.policy.load import encode_prompt, load_policy
    from jetrl.tasks import make_task

    if threads:
        torch.set_num_threads(threads)
    task = make_task(spec.task)
    model, tokenizer = load_policy(spec.model.path)
    rows = train_rows(task, spec.train.steps, spec.train.batch_groups)
    ids = tokenizer(text=[r["prompt"] for r in rows[: spec.train.batch_groups]])["input_ids"]
    if ids != [encode_prompt(tokenizer, r["prompt"]) for r in rows[: spec.train.batch_groups]]:
        raise SystemExit("TRL would tokenize the prompts unlike jetrl (jetrl.policy.load.encode_prompt)")
    config = trl.GRPOConfig(**config_kwargs(spec, work))
    versions = eval_versions(spec.train.steps, spec.schedule.eval_every)
    evaluation = HeldoutEval(tokenizer, task.heldout(), versions, spec.rollout.max_new_tokens)
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=verify_rewards,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[evaluation],
    )
    cpu_before = own_usage()["cpu_s"]
    evaluation.start = start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    usage = own_usage()
    return {
        "state": "COMPLETED" if trainer.state.global_step == spec.train.steps else "INCOMPLETE",
        "steps": trainer.state.global_step,
        "wall_s": wall - evaluation.eval_s,
        "wall_with_eval_s": wall,
        "eval_s": evaluation.eval_s,
        "eval_cpu_s": evaluation.eval_cpu_s,
        "cpu_train_s": usage["cpu_s"] - cpu_before,
        "cpu_process_s": usage["cpu_s"],
        "peak_rss_mb": usage["peak_rss_mb"],
        "curve": evaluation.curve,
        "version_seconds": evaluation.step_s,
        "torch_threads": torch.get_num_threads(),
        "versions": {"trl": trl.__version__, "transformers": _version("transformers"), "torch": torch.__version__},
        "config": config_kwargs(spec, work),
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def main(argv: list[str] | None = None) -> int:
    import importlib.util
    import tempfile

    from jetrl.config import load_spec

    p = argparse.ArgumentParser(prog="python -m jetrl.bench.peer_trl", description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", type=Path, required=True, help="the jetrl arm's run spec (YAML)")
    p.add_argument("--out", type=Path, required=True, help="where to write the result (JSON)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = p.parse_args(argv)
    if importlib.util.find_spec("trl") is None:
        raise SystemExit(PEER_EXTRA)
    with tempfile.TemporaryDirectory(prefix="jetrl-peer-trl-") as work:
        result = train(load_spec(args.spec), Path(work), args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["state"] == "COMPLETED" else 1


if __name__ == "__main__":
    raise SystemExit(main())
