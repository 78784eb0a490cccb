"""Make the starting checkpoint (policy version 0) of the built-in demo.

A fresh tiny model gets a SHORT supervised warm-up on training problems: long enough to learn
the answer format and part of the task, short enough that it solves only part of the held-out
set, so reinforcement learning has something measurable left to do. The defaults are tuned for
examples/arithmetic.yaml (about 30% held-out accuracy at version 0).

    python -m jetrl.policy.bootstrap OUT_DIR [--steps N] [--seed S] [--digits D] [--terms T]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from jetrl.config import TaskSpec
from jetrl.policy.generate import heldout_accuracy
from jetrl.policy.load import encode_prompt, save_policy
from jetrl.policy.tiny import make_tiny_model
from jetrl.policy.tokenizer import make_char_tokenizer
from jetrl.tasks import make_task

__all__ = ["bootstrap", "DEFAULT_STEPS", "main"]

DEFAULT_STEPS = 300
DEFAULT_BATCH = 64
DEFAULT_LR = 3e-3
EVAL_MAX_NEW_TOKENS = 8


def bootstrap(
    out_dir: str | Path,
    task_spec: TaskSpec,
    *,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH,
    lr: float = DEFAULT_LR,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Warm up a tiny model on `steps` batches of training problems and save it to `out_dir`.

    `progress(step, steps, loss)` is called after every step. Returns metrics, among them the
    greedy held-out accuracy of the saved checkpoint; they are also written to
    `out_dir/bootstrap.json`.
    """
    started = time.perf_counter()
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
            answer = tokenizer(p.answer, add_special_tokens=False)["input_ids"] + [eos]
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
        "final_loss": loss_value,
        "heldout_accuracy": accuracy,
        "heldout_size": task_spec.heldout_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.perf_counter() - started, 2),
        "task": task_spec.model_dump(mode="json"),
    }
    (path / "bootstrap.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Command line entry point with a rich progress bar."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    parser = argparse.ArgumentParser(prog="python -m jetrl.policy.bootstrap", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="directory to write the Hugging Face checkpoint to")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="supervised warm-up steps")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")
    parser.add_argument("--digits", type=int, default=TaskSpec().digits, help="arithmetic digits per operand")
    parser.add_argument("--terms", type=int, default=TaskSpec().terms, help="arithmetic operands per problem")
    parser.add_argument("--task-seed", type=int, default=0, help="seed of the task's data")
    args = parser.parse_args(argv)
    spec = TaskSpec(digits=args.digits, terms=args.terms, seed=args.task_seed)
    console = Console()
    with Progress(
        TextColumn("bootstrap"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(), console=console,
    ) as bar:
        job = bar.add_task("warm-up", total=args.steps, loss=float("nan"))
        metrics = bootstrap(
            args.out_dir, spec, steps=args.steps, seed=args.seed,
            progress=lambda step, _total, loss: bar.update(job, completed=step, loss=loss),
        )
    console.print(
        f"version 0 written to {metrics['path']}: held-out accuracy {metrics['heldout_accuracy']:.1%} "
        f"({metrics['parameters']:,} parameters, {metrics['seconds']:.0f}s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
