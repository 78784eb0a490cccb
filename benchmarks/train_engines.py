"""The torch train engine and DeepSpeed ZeRO on 1 and 2 ranks, side by side in one run (docs/engines.md).

  step        seconds per policy version (one train_step) on the same batches, and the ratio to
              the torch engine; the first steps (DeepSpeed's start, allocator warm-up) not timed
  checkpoint  what a restart needs beside the weights: the torch engine's AdamW state in
              trainer.pt vs DeepSpeed's checkpoint directory, its size and the time to write it

Run:  .venv/bin/python benchmarks/train_engines.py [--shapes tiny 25M 100M] [--json FILE]
Models are made on the spot (random weights, the built-in character tokenizer). The torch engine
runs on the CPU, as the trainer runs it; DeepSpeed on CPU (gloo) here, on GPUs (NCCL) where the
ranks see them, one GPU a rank (configurations with more ranks than GPUs are skipped). Nothing else
is started.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from jetrl.config import RunSpec
from jetrl.policy import make_char_tokenizer, make_tiny_model
from jetrl.policy.load import load_policy
from svc_trainer.api import TrainEngine, TrainSample
from svc_trainer.deepspeed_engine import DeepSpeedTrainEngine
from svc_trainer.engine import TorchTrainEngine

TOK = make_char_tokenizer()
# name -> (hidden, layers, heads, intermediate, completion tokens): the demo's policy, a 25M and a 100M one
SHAPES = {"tiny": (128, 2, 4, 384, 6), "25M": (512, 8, 8, 1376, 32), "100M": (1024, 8, 16, 2816, 32)}
WARMUP, TIMED = 2, 4


def batches(n: int, completion: int, samples: int = 128, seed: int = 0) -> list[list[TrainSample]]:
    """`n` batches shaped like the demo's (16 prompts x 8 samples), random tokens and advantages."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        batch = []
        for _ in range(samples):
            c = int(torch.randint(completion // 2, completion + 1, (), generator=g))
            batch.append(
                TrainSample(
                    prompt_token_ids=torch.randint(3, 40, (8,), generator=g).tolist(),
                    completion_token_ids=torch.randint(3, 40, (c,), generator=g).tolist(),
                    logprobs=(-3.0 * torch.rand(c, generator=g)).tolist(),
                    advantage=float(torch.randn((), generator=g)),
                )
            )
        out.append(batch)
    return out


def per_step(engine: TrainEngine, data: list[list[TrainSample]]) -> float:
    for b in data[:WARMUP]:
        engine.train_step(b)
    start = time.perf_counter()
    for b in data[WARMUP:]:
        engine.train_step(b)
    return (time.perf_counter() - start) / (len(data) - WARMUP)


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(shape: str, work: Path) -> list[dict]:
    hidden, layers, heads, intermediate, completion = SHAPES[shape]
    model = make_tiny_model(
        TOK, hidden_size=hidden, layers=layers, heads=heads, intermediate_size=intermediate, max_positions=256
    )
    model_dir = work / shape
    model.save_pretrained(model_dir)
    TOK.save_pretrained(model_dir)
    params = sum(p.numel() for p in model.parameters())
    data = batches(WARMUP + TIMED, completion)
    rows = []

    def run(**train) -> RunSpec:
        return RunSpec.model_validate({"model": {"path": str(model_dir)}, "train": {"lr": 1e-4, **train}})

    local = TorchTrainEngine(load_policy(model_dir)[0], run().train, max_new_tokens=completion)
    step = per_step(local, data)
    buf = io.BytesIO()
    start = time.perf_counter()
    torch.save(local.save_state(1), buf)  # what trainer.pt holds besides counters
    rows.append(row(shape, params, "torch", "cpu", 1, step, time.perf_counter() - start, len(buf.getvalue())))
    gpus = torch.cuda.device_count()
    where = "cuda" if gpus else "cpu"  # where DeepSpeed's ranks run
    for ranks, stage in ((1, 2), (2, 2), (2, 3)):
        if gpus and ranks > gpus:  # each NCCL rank takes a GPU of its own
            Console().print(f"{shape}: DeepSpeed ZeRO-{stage} on {ranks} ranks skipped, {gpus} GPU(s) here")
            continue
        ds = run(engine="deepspeed", deepspeed={"ranks": ranks, "zero_stage": stage, "micro_batch_size": 128})
        checkpoints = work / f"{shape}-{ranks}-{stage}"
        engine = DeepSpeedTrainEngine(ds, None, checkpoints, ranks=ranks, timeout_s=600)
        try:
            step = per_step(engine, data)
            start = time.perf_counter()
            engine.save_state(1)
            saved = time.perf_counter() - start
        finally:
            engine.close()
        rows.append(row(shape, params, f"deepspeed ZeRO-{stage}", where, ranks, step, saved, size_of(checkpoints)))
    base = rows[0]["step_s"]
    for r in rows:
        r["vs_torch"] = r["step_s"] / base
    return rows


def row(shape, params, engine, device, ranks, step, save_s, size) -> dict:
    return {
        "shape": shape,
        "params": params,
        "engine": engine,
        "device": device,
        "ranks": ranks,
        "step_s": step,
        "checkpoint_s": save_s,
        "checkpoint_bytes": size,
    }


def report(rows: list[dict]) -> None:
    table = Table(title=f"one policy version (128 samples), mean of {TIMED} after {WARMUP} warm-up")
    for col in ("model", "engine", "device", "ranks", "s/version", "time vs torch", "state written", "state size"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            f"{r['shape']} ({r['params'] / 1e6:.2f}M)",
            r["engine"],
            r["device"],
            str(r["ranks"]),
            f"{r['step_s']:.3f}",
            f"{r['vs_torch']:.2f}x",
            f"{r['checkpoint_s']:.2f} s",
            f"{r['checkpoint_bytes'] / 2**20:.1f} MiB",
        )
    Console().print(table)


def deepspeed_version() -> str:
    import deepspeed

    return deepspeed.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--shapes", nargs="+", default=["tiny", "25M"], choices=list(SHAPES))
    args = parser.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            rows += measure(shape, Path(tmp))
    report(rows)
    if args.json:
        machine = {
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"),
            "deepspeed": deepspeed_version(),
        }
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
