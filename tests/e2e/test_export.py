"""`jetrl export`: a run's version out of jetrl as a standard Hugging Face model directory; and
`jetrl generate`, which samples from a running run and sends an ended one to export."""

from __future__ import annotations

import json

import grpc
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from jetrl.cli.export import MANIFEST, ExportError, export
from jetrl.config import parse_spec
from jetrl.policy.generate import heldout_accuracy
from jetrl.rpc import channel
from jetrl.tasks import make_task
from jetrl.v1 import services_pb2 as svc
from jetrl.v1 import services_pb2_grpc
from runs import create_run, finished, run_id, wait_until

pytestmark = pytest.mark.timeout(600)


def spec_yaml(stack) -> str:
    """The one run spec of this module."""
    return stack.spec_yaml("export", steps=2)


@pytest.fixture(scope="module")
async def trained(stack):
    """A completed two-version run of the module's stack."""
    rid = run_id("export")
    await create_run(stack, spec_yaml(stack), rid)
    last = await wait_until(stack, rid, finished)
    assert last.state == svc.COMPLETED, last.message
    return rid


def standard_load(path):
    """What a user of transformers does with the directory: nothing of jetrl's."""
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True), AutoTokenizer.from_pretrained(path)


async def test_the_last_version_loads_with_transformers_and_scores_its_last_evaluation(stack, store, trained, tmp_path):
    out = await export(stack.settings, trained, None, tmp_path / "v2")
    model, tokenizer = standard_load(out)
    assert json.loads((out / MANIFEST).read_text())["version"] == 2
    spec = parse_spec(spec_yaml(stack))
    problems = make_task(spec.task).heldout()
    accuracy = heldout_accuracy(model.eval(), tokenizer, problems, max_new_tokens=spec.rollout.max_new_tokens)
    version, _, _, evaluated = (await store.reports.evaluations(trained))[-1]
    assert version == 2 and accuracy == pytest.approx(evaluated)


async def test_version_0_is_the_starting_model_and_version_1_the_trainers(stack, trained, tmp_path):
    start, _ = standard_load(stack.model_dir)
    v0, _ = standard_load(await export(stack.settings, trained, 0, tmp_path / "v0"))
    v1, _ = standard_load(await export(stack.settings, trained, 1, tmp_path / "v1"))
    start_state, v0_state, v1_state = start.state_dict(), v0.state_dict(), v1.state_dict()
    assert start_state.keys() == v0_state.keys() and all(torch.equal(start_state[n], v0_state[n]) for n in start_state)
    published = load_file(stack.settings.data_dir / "runs" / trained / "weights" / "v000001.safetensors")
    assert published and all(torch.equal(t, v1_state[n]) for n, t in published.items())


async def test_what_cannot_be_exported_is_refused_with_the_reason(stack, trained, tmp_path):
    with pytest.raises(ExportError, match="versions 0 to 2; --version 3"):
        await export(stack.settings, trained, 3, tmp_path / "v3")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(ExportError, match="not empty"):
        await export(stack.settings, trained, None, tmp_path / "used")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await export(stack.settings, "no-such-run", None, tmp_path / "none")
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


async def test_generate_samples_a_running_run_and_points_an_ended_one_to_export(stack, trained, capsys):
    from jetrl.cli.generate import main as generate

    rid = run_id("generate")
    await create_run(stack, stack.spec_yaml("generate", steps=40), rid)
    await wait_until(stack, rid, lambda p: p.policy_version >= 1)
    assert await generate(stack.settings, rid, ["12+34=", "7-5="], 5, 0.0, 0) == 0
    out = capsys.readouterr().out
    assert f"{rid} at version" in out and "12+34=" in out and "7-5=" in out
    async with channel(stack.settings.scheduler_addr, stack.settings) as ch:
        await services_pb2_grpc.SchedulerServiceStub(ch).StopRun(svc.StopRunRequest(run_id=rid, reason="test done"))
    assert await generate(stack.settings, trained, ["1+1="], 5, 0.0, 0) == 2
    assert f"jetrl export {trained} OUT_DIR" in capsys.readouterr().err
