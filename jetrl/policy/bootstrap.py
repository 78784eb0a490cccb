"""Make the starting checkpoint (policy version 0) of the built-in demo.

A fresh tiny model is warmed up by imitating a *flawed teacher*: the teacher knows the
arithmetic but, on a fixed share of its answers (`teacher_error`, 75% by default), writes the
result plus one. That is how a model distilled from an imperfect teacher starts an RL run: it
knows the answer format and most of the skill, its samples often hold the right answer, but its
greedy answer is usually the teacher's mistake. Only the verifier's reward can tell the two
apart, so the held-out accuracy the RL run adds is the verifier's doing, and it shows within a
few dozen versions (numbers in README.md). With `teacher_error` 0 the warm-up is plain
supervised learning on correct answers.

    python -m jetrl.policy.bootstrap OUT_DIR [--steps N] [--seed S] [--teacher-error P]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch

from jetrl.policy.generate import heldout_accuracy
from jetrl.policy.load import encode_prompt, save_policy
from jetrl.policy.tiny import make_tiny_model
from jetrl.policy.tokenizer import make_char_tokenizer
from jetrl.spec_sections import TaskSpec
from jetrl.tasks import make_task

__all__ = ["bootstrap", "bootstrap_with_progress", "DEFAULT_STEPS", "DEFAULT_TEACHER_ERROR", "main"]

# 1,500: with 1,000 the warm-up of two seeds in five (1, 4) left a version 0 that RL lifted only
# +13.0 and +23.5 points; with 1,500 every seed 0-4 gains 29 to 80 (README, Results)
DEFAULT_STEPS = 1500
DEFAULT_BATCH = 64
DEFAULT_LR = 1e-3
DEFAULT_TEACHER_ERROR = 0.75
EVAL_MAX_NEW_TOKENS = 8


def bootstrap(
    out_dir: str | Path,
    task_spec: TaskSpec,
    *,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH,
    lr: float = DEFAULT_LR,
    teacher_error: float = DEFAULT_TEACHER_ERROR,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Warm up a tiny model on `steps` batches of training problems and save it to `out_dir`.

    `progress(step, steps, loss)` is called after every step. Returns metrics, among them the
    greedy held-out accuracy of the saved checkpoint; they are also written to
    `out_dir/bootstrap.json`.
    """
    if not 0.0 <= teacher_error <= 1.0:
        raise ValueError(f"teacher_error must be in [0, 1], got {teacher_error}")
    started = time.perf_counter()
    teacher = random.Random(f"teacher:{seed}")
    task = make_task(task_spec)
    tokenizer = make_char_tokenizer()
    model = make_tiny_model(tokenizer, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    model.train()
    loss_value = float("nan")
    for step in range(steps):
        # Training indices from the top of the stream; RL then continues from index 0 with its
        # own seed, and repeats are harmless on a stream this large.
        problems = [task.train_problem(step * batch_size + i) for i in range(batch_size)]
        rows, labels = [], []
        for p in problems:
            prompt = encode_prompt(tokenizer, p.prompt)
            taught = int(p.answer) + 1 if teacher.random() < teacher_error else int(p.answer)
            answer = tokenizer(str(taught), add_special_tokens=False)["input_ids"] + [eos]
            rows.append(prompt + answer)
            labels.append([-100] * len(prompt) + answer)  # learn the answer, not the prompt
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        lab = torch.tensor([lb + [-100] * (width - len(lb)) for lb in labels])
        attn = (torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]).long()
        loss = model(input_ids=ids, attention_mask=attn, labels=lab).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = float(loss.detach())
        if progress is not None:
            progress(step + 1, steps, loss_value)
    model.eval()
    accuracy = heldout_accuracy(model, tokenizer, task.heldout(), max_new_tokens=EVAL_MAX_NEW_TOKENS)
    path = save_policy(model, tokenizer, out_dir)
    metrics = {
        "path": str(path),
        "steps": steps,
        "seed": seed,
        "teacher_error": teacher_error,
        "final_loss": loss_value,
        "heldout_accuracy": accuracy,
        "heldout_size": task_spec.heldout_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.perf_counter() - started, 2),
        "task": task_spec.model_dump(mode="json"),
    }
    (path / "bootstrap.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def bootstrap_with_progress(out_dir: str | Path, task_spec: TaskSpec, console=None, **kwargs) -> dict:
    """`bootstrap` behind a rich progress bar (the CLI, the demo and `jetrl bootstrap` use it)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = console or Console(stderr=True)
    steps = kwargs.get("steps", DEFAULT_STEPS)
    with Progress(
        TextColumn("bootstrap: warm-up on the teacher"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        job = bar.add_task("warm-up", total=steps, loss=float("nan"))
        metrics = bootstrap(
            out_dir,
            task_spec,
            progress=lambda step, _total, loss: bar.update(job, completed=step, loss=loss),
            **kwargs,
        )
    console.print(
        f"version 0 written to {metrics['path']}: held-out accuracy {metrics['heldout_accuracy']:.1%} "
        f"({metrics['parameters']:,} parameters, {metrics['seconds']:.0f}s)"
    )
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jetrl.policy.bootstrap", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="directory to write the Hugging Face checkpoint to")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="supervised warm-up steps")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")
    parser.add_argument(
        "--teacher-error",
        type=float,
        default=DEFAULT_TEACHER_ERROR,
        help="share of the teacher's answers that are off by one (0 = correct teacher)",
    )
    parser.add_argument("--digits", type=int, default=TaskSpec().digits, help="arithmetic digits per operand")
    parser.add_argument("--terms", type=int, default=TaskSpec().terms, help="arithmetic operands per problem")
    parser.add_argument("--task-seed", type=int, default=0, help="seed of the task's data")
    args = parser.parse_args(argv)
    spec = TaskSpec(digits=args.digits, terms=args.terms, seed=args.task_seed)
    bootstrap_with_progress(args.out_dir, spec, steps=args.steps, seed=args.seed, teacher_error=args.teacher_error)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
