"""Tune the built-in demo in one process: bootstrap, then the synchronous RL loop, timed.

It runs the production pieces in the production order, minus the bus and the database:
`bootstrap()` makes version 0; per step the B prompt groups the scheduler would admit
(`train_problem(step·B + j)`, the scheduler's sampling seeds) are generated one group per
`TorchEngine.generate` call as a rollout worker does, scored with the `verify` check
(`is_correct`, reward 1 or 0), turned into advantages by `advantages.compute` and trained by
`TorchTrainEngine.train_step` on a separate copy of the model (the trainer's process); the new
weights travel as a safetensors blob into the rollout engine. Held-out accuracy is greedy
`TorchEngine.evaluate` at version 0, every `eval_every` versions and at the end. Everything runs on
one torch thread, as each service does in the demo, so the wall times are what one service costs;
the distributed demo adds its own overhead on top.

    .venv/bin/python benchmarks/tune_demo.py                    # examples/arithmetic.yaml as is
    .venv/bin/python benchmarks/tune_demo.py --seed 0 1 2       # robustness over seeds
    .venv/bin/python benchmarks/tune_demo.py --lr 3e-4 --steps 60 --group-size 16 --bootstrap-steps 200

A seed sets the bootstrap's initialisation and the run's sampling seed; the task (and so the
held-out set) stays the spec's unless --task-seed is given.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from jetrl.config import RunSpec, load_spec
from jetrl.policy.bootstrap import DEFAULT_LR, DEFAULT_STEPS, DEFAULT_TEACHER_ERROR, bootstrap
from jetrl.policy.load import encode_prompt, load_policy, state_to_bytes
from jetrl.tasks import make_task
from jetrl.tasks.answers import is_correct
from svc_rollout.api import GenRequest
from svc_rollout.engine import TorchEngine
from svc_trainer import advantages
from svc_trainer.api import TrainSample
from svc_trainer.engine import TorchTrainEngine

DEFAULT_SPEC = Path(__file__).resolve().parents[1] / "examples" / "arithmetic.yaml"
# (command-line flag, spec section, spec field): the knobs that can be overridden.
KNOBS = [
    ("steps", "train", "steps"),
    ("batch_groups", "train", "batch_groups"),
    ("lr", "train", "lr"),
    ("clip_eps_high", "train", "clip_eps_high"),
    ("advantage", "train", "advantage"),
    ("group_size", "rollout", "group_size"),
    ("temperature", "rollout", "temperature"),
    ("top_p", "rollout", "top_p"),
    ("max_new_tokens", "rollout", "max_new_tokens"),
    ("digits", "task", "digits"),
    ("terms", "task", "terms"),
    ("heldout_size", "task", "heldout_size"),
    ("task_seed", "task", "seed"),
    ("eval_every", "schedule", "eval_every"),
]


def make_spec(args: argparse.Namespace, seed: int, model_dir: Path) -> RunSpec:
    """The base spec with the command line's overrides, validated like any run spec."""
    raw = load_spec(args.spec).model_dump(mode="json")
    for flag, section, field in KNOBS:
        if getattr(args, flag) is not None:
            raw[section][field] = getattr(args, flag)
    raw["seed"], raw["model"]["path"] = seed, str(model_dir)
    return RunSpec.model_validate(raw)


def evaluate(engine: TorchEngine, spec: RunSpec, heldout, clock: dict) -> float:
    started = time.perf_counter()
    correct, total = engine.evaluate(heldout, max_new_tokens=spec.rollout.max_new_tokens)
    clock["eval"] += time.perf_counter() - started
    return correct / total


def rl_step(
    step: int, spec: RunSpec, task, engine: TorchEngine, trainer: TorchTrainEngine, clock: dict, weights: Path
) -> dict:
    """One synchronous version: B groups of G samples, rewards, advantages, one train step; the
    new version reaches the engine through the file `weights`, as a trainer's would."""
    r, b = spec.rollout, spec.train.batch_groups
    samples, rewards, mixed = [], [], 0
    for n in range(step * b, (step + 1) * b):
        problem = task.train_problem(n)
        prompt = encode_prompt(engine.tokenizer, problem.prompt)
        seed = (spec.seed * 1_000_003 + n) % (1 << 63)  # as the scheduler seeds group n
        started = time.perf_counter()
        results = engine.generate(
            [
                GenRequest(prompt, r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, seed=seed * 1024 + i)
                for i in range(r.group_size)
            ]
        )
        clock["generate"] += time.perf_counter() - started
        group = [1.0 if is_correct(problem, res.text) else 0.0 for res in results]
        mixed += len(set(group)) > 1
        rewards += group
        for res, adv in zip(results, advantages.compute(spec.train.advantage, group)):
            if adv is None:  # mc_grpo's pivot: no gradient, as the trainer does (svc_trainer/worker.py)
                samples.append(TrainSample(prompt, res.token_ids, res.logprobs, 0.0, [False] * len(res.token_ids)))
            else:
                samples.append(TrainSample(prompt, res.token_ids, res.logprobs, adv))
    started = time.perf_counter()
    metrics = trainer.train_step(samples)
    clock["train"] += time.perf_counter() - started
    started = time.perf_counter()
    weights.write_bytes(state_to_bytes(trainer.model))
    engine.load_weights(weights, step + 1)
    clock["sync"] += time.perf_counter() - started
    return {"reward": sum(rewards) / len(rewards), "mixed": mixed / b, **metrics}


def run(args: argparse.Namespace, seed: int, workdir: Path) -> dict:
    """Bootstrap and train one seed; returns its accuracies and wall-time split."""
    clock = dict.fromkeys(("bootstrap", "generate", "train", "sync", "eval"), 0.0)
    t = make_spec(args, seed, workdir).task
    model_dir = workdir / (
        f"boot-s{seed}-n{args.bootstrap_steps}-lr{args.bootstrap_lr:g}-te{args.teacher_error:g}"
        f"-d{t.digits}t{t.terms}-h{t.heldout_size}-ts{t.seed}"
    )
    spec = make_spec(args, seed, model_dir)
    if (model_dir / "bootstrap.json").is_file():  # a --cache hit: same seed, warm-up and task
        boot = json.loads((model_dir / "bootstrap.json").read_text())
    else:
        boot = bootstrap(
            model_dir,
            spec.task,
            steps=args.bootstrap_steps,
            seed=seed,
            lr=args.bootstrap_lr,
            teacher_error=args.teacher_error,
        )
    clock["bootstrap"] = boot["seconds"]
    print(
        f"[seed {seed}] bootstrap: {boot['parameters']:,} parameters, loss {boot['final_loss']:.3f}, "
        f"{clock['bootstrap']:.1f}s"
    )
    task = make_task(spec.task)
    heldout = task.heldout()
    engine = TorchEngine(*load_policy(model_dir))  # the rollout worker's copy
    trainer_model, _ = load_policy(model_dir)  # the trainer's copy
    trainer = TorchTrainEngine(
        trainer_model, spec.train, temperature=spec.rollout.temperature, max_new_tokens=spec.rollout.max_new_tokens
    )
    accuracy = {0: evaluate(engine, spec, heldout, clock)}
    print(f"[seed {seed}] v0 held-out accuracy {accuracy[0]:.1%}")
    every = spec.schedule.eval_every
    for step in range(spec.train.steps):
        m = rl_step(step, spec, task, engine, trainer, clock, workdir / "weights.safetensors")
        version = step + 1
        line = (
            f"[seed {seed}] v{version:<4} reward {m['reward']:.3f}  mixed groups {m['mixed']:.2f}  "
            f"loss {m['loss']:+.4f}  clip {m['clip_fraction']:.3f}  grad {m['grad_norm']:.2f}"
        )
        if (every and version % every == 0) or version == spec.train.steps:
            accuracy[version] = evaluate(engine, spec, heldout, clock)
            line += f"  held-out {accuracy[version]:.1%}"
        print(line, flush=True)
    total = sum(clock.values())
    first, last = accuracy[0], accuracy[spec.train.steps]
    print(
        f"[seed {seed}] v0 {first:.1%} -> v{spec.train.steps} {last:.1%} ({(last - first) * 100:+.1f} points) "
        f"in {total:.0f}s: " + ", ".join(f"{k} {v:.0f}s" for k, v in clock.items())
    )
    return {"seed": seed, "accuracy": accuracy, "seconds": clock, "total_seconds": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="base run spec (default: the demo's)")
    parser.add_argument("--seed", type=int, nargs="+", default=[0], help="one run per seed")
    parser.add_argument("--bootstrap-steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--bootstrap-lr", type=float, default=DEFAULT_LR)
    parser.add_argument("--teacher-error", type=float, default=DEFAULT_TEACHER_ERROR)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (each demo service uses 1)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--cache",
        type=Path,
        help="keep bootstrapped checkpoints here and reuse them (keyed by seed, warm-up and task; "
        "clear it after changing the model size in jetrl/policy/tiny.py)",
    )
    for flag, _, _ in KNOBS:
        kind = str if flag == "advantage" else float if flag in ("lr", "clip_eps_high", "temperature", "top_p") else int
        parser.add_argument(f"--{flag.replace('_', '-')}", type=kind, help="override the spec's value")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="tune-demo-") as tmp:
        results = [run(args, seed, args.cache or Path(tmp)) for seed in args.seed]
    print("\nseed  v0      final   gain     wall")
    for res in results:
        acc = list(res["accuracy"].values())
        print(
            f"{res['seed']:<5} {acc[0]:6.1%}  {acc[-1]:6.1%}  "
            f"{(acc[-1] - acc[0]) * 100:+5.1f}pt  {res['total_seconds']:5.0f}s"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
