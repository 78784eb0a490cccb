"""The torch engine and the vLLM engine on this machine, side by side in one run (docs/engines.md).

  throughput  the same model, prompts and sampling on both engines: new tokens per second, ratio
  gap         |behaviour - trainer| log-prob per token on the same weights: what each engine's
              numerics leave for the decoupled loss's behaviour weight to absorb
  weights     a ~1 GB model: the trainer writing a version, its checksum, the gRPC stream, and
              the load into each engine (in place for vLLM), as MB/s

Run:  bash scripts/setup_vllm.sh && .venv-vllm/bin/python benchmarks/engines.py [--json FILE]
Models are made on the spot (random weights, the built-in character tokenizer): nothing is
downloaded. It needs ~6 GB of memory; it starts a gRPC server in-process and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from rich.console import Console
from rich.table import Table
from transformers import LlamaForCausalLM

from jetrl.policy import encode_prompt, make_char_tokenizer, make_tiny_model, save_policy
from jetrl.rpc_security import LOCAL, ServerSecurity
from jetrl.service import grpc_server
from jetrl.spec_sections import TaskSpec, TrainSpec, VllmSpec
from jetrl.tasks import make_task
from jetrl.weights import file_sha256, stream_weights
from svc_rollout.api import GenRequest, GenResult
from svc_rollout.engine import TorchEngine
from svc_rollout.vllm_engine import VllmEngine
from svc_trainer.checkpoint import save_weights, weights_path
from svc_trainer.engine import TorchTrainEngine
from svc_trainer.server import TrainerServicer, register
from svc_trainer.worker import Trainer

TOK = make_char_tokenizer()
T = TypeVar("T")
# name -> (hidden, layers, heads, intermediate): the demo's tiny policy, a mid-size one, ~1 GB in float32
SHAPES = {"tiny": (128, 2, 4, 384), "25M": (512, 8, 8, 1376), "1GB": (1024, 20, 16, 2816)}


def make_model(shape: str, seed: int = 0) -> LlamaForCausalLM:
    hidden, layers, heads, intermediate = SHAPES[shape]
    model = make_tiny_model(
        TOK,
        hidden_size=hidden,
        layers=layers,
        heads=heads,
        intermediate_size=intermediate,
        max_positions=256,
        seed=seed,
    )
    return model.eval()


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def requests(groups: int, group_size: int, max_new_tokens: int) -> list[GenRequest]:
    """`groups` arithmetic prompts, `group_size` samples each, at temperature 1 as the demo samples."""
    problems = make_task(TaskSpec(heldout_size=groups)).heldout()
    return [
        GenRequest(encode_prompt(TOK, p.prompt), max_new_tokens, temperature=1.0, seed=g * group_size + i)
        for g, p in enumerate(problems)
        for i in range(group_size)
    ]


def new_tokens(results: list[GenResult]) -> int:
    return sum(len(r.token_ids) for r in results)


def gap(model, results: list[GenResult], reqs: list[GenRequest]) -> tuple[float, float]:
    """Mean and max |behaviour - trainer| log-prob per token, the trainer on `model`'s weights."""
    trainer = TorchTrainEngine(copy.deepcopy(model), TrainSpec(), temperature=1.0)
    logprobs, mask, _ = trainer.token_logprobs(
        [r.prompt_token_ids for r in reqs], [res.token_ids for res in results], grad=False
    )
    behaviour = torch.zeros_like(logprobs)
    for i, res in enumerate(results):
        behaviour[i, : len(res.logprobs)] = torch.tensor(res.logprobs)
    diff = (behaviour - logprobs).abs()[mask]
    return float(diff.mean()), float(diff.max())


def throughput_and_gap(shape: str, work: Path, rows: list[dict]) -> None:
    model = make_model(shape)
    model_dir = save_policy(model, TOK, work / shape)
    reqs = requests(groups=32, group_size=8, max_new_tokens=32)
    torch_engine = TorchEngine(copy.deepcopy(model), TOK)
    torch_engine.generate(reqs[:8])  # warm-up
    torch_out, torch_s = timed(lambda: torch_engine.generate(reqs))
    vllm_engine = VllmEngine(model_dir, TOK, VllmSpec(dtype="float32", memory_fraction=0.3, max_model_len=256))
    try:
        vllm_engine.generate(reqs[:8])
        vllm_out, vllm_s = timed(lambda: vllm_engine.generate(reqs))
    finally:
        vllm_engine.close()
    params = sum(p.numel() for p in model.parameters())
    for name, out, seconds in (("torch", torch_out, torch_s), ("vllm", vllm_out, vllm_s)):
        mean, worst = gap(model, out, reqs)
        rows.append(
            dict(
                model=shape,
                params=params,
                engine=name,
                sequences=len(reqs),
                new_tokens=new_tokens(out),
                seconds=seconds,
                tokens_per_s=new_tokens(out) / seconds,
                gap_mean=mean,
                gap_max=worst,
            )
        )


async def weights_at_1gb(work: Path) -> dict:
    """A version of the ~1 GB model through the real trainer and rollout code paths, timed."""
    model = make_model("1GB")
    model_dir = save_policy(model, TOK, work / "1GB")
    newer = make_model("1GB", seed=1)
    data = work / "data"
    path, write_s = timed(lambda: save_weights(weights_path(data, "bench", 1), newer))
    mb = path.stat().st_size / 2**20
    digest, sha_s = timed(lambda: file_sha256(path))
    server = grpc_server(ServerSecurity())
    register(TrainerServicer(Trainer(None, None, data, "")))(server)  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        start = time.perf_counter()
        _, streamed = await stream_weights(f"127.0.0.1:{port}", LOCAL, "bench", 1, work)  # hashed as it streams
        stream_s = time.perf_counter() - start
    finally:
        await server.stop(None)
    assert streamed == digest
    torch_engine = TorchEngine(copy.deepcopy(model), TOK)
    _, torch_load_s = timed(lambda: torch_engine.load_weights(path, 1))
    vllm_engine = VllmEngine(model_dir, TOK, VllmSpec(dtype="float32", memory_fraction=0.45, max_model_len=256))
    try:
        _, vllm_load_s = timed(lambda: vllm_engine.load_weights(path, 1))
        probe = [GenRequest(encode_prompt(TOK, "12+34="), 4, temperature=0.0)]
        same = vllm_engine.generate(probe)[0].token_ids == torch_engine.generate(probe)[0].token_ids
    finally:
        vllm_engine.close()
    return dict(
        mb=mb,
        params=sum(p.numel() for p in model.parameters()),
        write_mb_s=mb / write_s,
        sha256_mb_s=mb / sha_s,
        grpc_stream_mb_s=mb / stream_s,
        torch_load_mb_s=mb / torch_load_s,
        vllm_load_mb_s=mb / vllm_load_s,
        vllm_greedy_equals_torch_after_load=same,
    )


def report(rows: list[dict], weights: dict) -> None:
    console = Console()
    table = Table(title="generation on this machine: torch vs vLLM, same model, prompts and sampling")
    for col in ("model", "params", "engine", "new tokens", "tokens/s", "vLLM / torch", "gap mean", "gap max"):
        table.add_column(col, justify="right")
    torch_rate = {r["model"]: r["tokens_per_s"] for r in rows if r["engine"] == "torch"}
    for r in rows:
        ratio = f"{r['tokens_per_s'] / torch_rate[r['model']]:.2f}x" if r["engine"] == "vllm" else ""
        table.add_row(
            r["model"],
            f"{r['params'] / 1e6:.2f}M",
            r["engine"],
            str(r["new_tokens"]),
            f"{r['tokens_per_s']:,.0f}",
            ratio,
            f"{r['gap_mean']:.1e}",
            f"{r['gap_max']:.1e}",
        )
    console.print(table)
    w = Table(title=f"a {weights['mb']:,.0f} MiB version ({weights['params'] / 1e6:.0f}M parameters, float32), MB/s")
    for col in ("trainer writes", "sha256", "gRPC stream", "torch engine load", "vLLM load (in place)"):
        w.add_column(col, justify="right")
    w.add_row(
        *(
            f"{weights[k]:,.0f}"
            for k in ("write_mb_s", "sha256_mb_s", "grpc_stream_mb_s", "torch_load_mb_s", "vllm_load_mb_s")
        )
    )
    console.print(w)
    same = weights["vllm_greedy_equals_torch_after_load"]
    console.print(f"vLLM's greedy tokens equal the torch engine's after the load: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--shapes", nargs="+", default=["tiny", "25M"], choices=["tiny", "25M"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jetrl-engines-") as tmp:
        work = Path(tmp)
        rows: list[dict] = []
        for shape in args.shapes:
            throughput_and_gap(shape, work, rows)
        weights = asyncio.run(weights_at_1gb(work))
    report(rows, weights)
    if args.json:
        args.json.write_text(json.dumps({"generation": rows, "weights": weights}, indent=2) + "\n")


if __name__ == "__main__":
    main()
