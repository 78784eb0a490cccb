"""End to end on vLLM (bash scripts/test_vllm.sh): the four services train the tiny policy with the
rollout workers generating through vLLM, and the exported version loads back into vLLM."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM lives in .venv-vllm: bash scripts/setup_vllm.sh, then scripts/test_vllm.sh")

from jetrl.cli.export import export  # noqa: E402
from jetrl.config import parse_spec  # noqa: E402
from jetrl.policy.load import load_tokenizer  # noqa: E402
from jetrl.tasks import make_task  # noqa: E402
from jetrl.v1 import services_pb2 as svc  # noqa: E402
from runs import assert_every_sample_trained_once, create_run, finished, run_id, trainer_count, wait_until  # noqa: E402
from svc_rollout.vllm_engine import VllmEngine  # noqa: E402
from tiny_models import scratch_qwen2  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]
VLLM = "rollout: {engine: vllm, vllm: {dtype: float32, memory_fraction: 0.1}, "


def vllm_spec(stack, name: str, steps: int) -> str:
    return stack.spec_yaml(name, steps=steps).replace("rollout: {", VLLM)


async def test_a_run_on_vllm_trains_every_sample_once_and_its_export_loads_into_vllm(stack, store, tmp_path):
    rid = run_id("vllm")
    yaml = vllm_spec(stack, "vllm", steps=3)
    await create_run(stack, yaml, rid)
    last = await wait_until(stack, rid, finished)
    assert last.state == svc.COMPLETED, last.message
    await assert_every_sample_trained_once(stack, store, rid, steps=3, b=2, g=4)
    # vLLM's kernels against the trainer's torch on the same weights: small, measured, shown in progress
    assert 0 <= last.logprob_gap_mean <= last.logprob_gap_max < 1e-3
    spec = parse_spec(yaml)
    out = await export(stack.settings, rid, None, tmp_path / "export")
    engine = VllmEngine(out, load_tokenizer(out), spec.rollout.vllm)
    try:
        correct, total = engine.evaluate(make_task(spec.task).heldout(), max_new_tokens=spec.rollout.max_new_tokens)
    finally:
        engine.close()
    version, evaluated_correct, evaluated_total, _ = (await store.reports.evaluations(rid))[-1]
    assert version == 3 and (correct, total) == (evaluated_correct, evaluated_total)


def gsm8k_file(path: Path, n: int = 64) -> Path:
    """A GSM8K-format JSONL file (`question`, `answer` ending in `#### n`) of small word problems."""
    rng = random.Random(0)
    with path.open("w") as f:
        for _ in range(n):
            a, b = rng.randint(2, 60), rng.randint(2, 60)
            question = f"Tom has {a} apples. He buys {b} more. How many apples does Tom have now?"
            f.write(json.dumps({"question": question, "answer": f"{a} + {b} = {a + b}\n#### {a + b}"}) + "\n")
    return path


async def test_gsm8k_on_a_scratch_qwen2_with_its_bpe_tokenizer_and_chat_template_completes(stack, store, tmp_path):
    data = gsm8k_file(tmp_path / "gsm8k.jsonl")
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    model_dir = scratch_qwen2(tmp_path / "qwen2", [f"{r['question']}\n{r['answer']}" for r in rows])
    assert json.loads((model_dir / "config.json").read_text())["model_type"] == "qwen2"
    rid = run_id("qwen2")
    yaml = "\n".join(
        [
            "name: qwen2-gsm8k",
            f"model: {{path: {model_dir}}}",
            f"task: {{name: gsm8k, path: {data}, heldout_size: 8, chat_template: true}}",
            "rollout: {group_size: 2, max_new_tokens: 24, engine: vllm, vllm: {dtype: float32, memory_fraction: 0.1}}",
            "train: {steps: 2, batch_groups: 2, lr: 0.001}",
            "schedule: {eval_every: 0}",
        ]
    )
    await create_run(stack, yaml + "\n", rid)
    last = await wait_until(stack, rid, finished)
    assert last.state == svc.COMPLETED, last.message
    rows = await store.reports.trained_sample_rows(rid)
    assert len(rows) == 2 * 2 * 2 == await trainer_count(stack, rid)
    assert all(r.reward is not None and r.advantage is not None and r.trained_version is not None for r in rows)
    assert [e[0] for e in await store.reports.evaluations(rid)] == [0, 2]
