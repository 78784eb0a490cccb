"""The demo on vLLM, whole (bash scripts/test_vllm.sh; `slow`: about 4 minutes): `jetrl demo` with
examples/arithmetic-vllm.yaml on a stack of its own gains at least 25 held-out points, and its
last version, exported, scores the run's last evaluation in vLLM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM lives in .venv-vllm: bash scripts/setup_vllm.sh, then scripts/test_vllm.sh")

from jetrl.cli.export import export  # noqa: E402
from jetrl.cli.stack import down, up  # noqa: E402
from jetrl.config import load_spec  # noqa: E402
from jetrl.policy.load import load_tokenizer  # noqa: E402
from jetrl.tasks import make_task  # noqa: E402
from runs import run_demo  # noqa: E402
from svc_rollout.vllm_engine import VllmEngine  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1200)]
SPEC = Path(__file__).resolve().parents[2] / "examples" / "arithmetic-vllm.yaml"


def test_the_demo_on_vllm_gains_25_points_and_its_export_scores_its_last_evaluation(
    database_url, tmp_path, monkeypatch
):
    settings, run_id, evaluations = run_demo(SPEC, tmp_path, database_url, monkeypatch)
    last = evaluations[-1]
    # the last version out of jetrl and into vLLM: the same greedy answers as the run's evaluation
    # (the stack is down: export reads the trainer's file through a stack brought up again)
    up(settings)
    try:
        out = asyncio.run(export(settings, run_id, None, tmp_path / "export"))
    finally:
        down(settings)
    spec = load_spec(SPEC)
    llm = VllmEngine(out, load_tokenizer(out), spec.rollout.vllm)
    try:
        correct, total = llm.evaluate(make_task(spec.task).heldout(), max_new_tokens=spec.rollout.max_new_tokens)
    finally:
        llm.close()
    assert (correct, total) == (last[1], last[2])
