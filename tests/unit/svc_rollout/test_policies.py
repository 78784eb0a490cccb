"""Policies (svc_rollout/policies.py): which engine a run spec gets, and an engine this worker
cannot build failing the run's events at once with what to do; and the checks CreateRun asks a
worker for before a run starts (svc_rollout/checks.py)."""

from __future__ import annotations

import importlib.util

import pytest

from jetrl.config import RunSpec
from jetrl.policy import make_char_tokenizer, make_tiny_model, save_policy
from svc_rollout.checks import available_engines, run_problems
from svc_rollout.engine import TorchEngine
from svc_rollout.policies import EngineUnavailable, Policies


class Specs:
    """Stands in for the scheduler's run specs, counting the lookups."""

    def __init__(self, spec: RunSpec):
        self.spec, self.gets = spec, 0

    async def get(self, run_id):
        self.gets += 1
        return self.spec


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = make_char_tokenizer()
    return save_policy(make_tiny_model(tok, hidden_size=32, heads=2, layers=1), tok, tmp_path_factory.mktemp("m"))


def spec(model_dir, **rollout) -> RunSpec:
    return RunSpec.model_validate({"name": "p", "model": {"path": str(model_dir)}, "rollout": rollout})


async def test_the_torch_engine_is_the_default(model_dir):
    engine = await Policies(Specs(spec(model_dir))).engine("run1")
    assert isinstance(engine, TorchEngine) and engine.version == 0


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
async def test_vllm_where_it_is_not_installed_says_how_to_get_it_and_fails_at_once(model_dir):
    specs = Specs(spec(model_dir, engine="vllm"))
    policies = Policies(specs)
    with pytest.raises(EngineUnavailable, match="cannot import vLLM .*scripts/setup_vllm.sh"):
        await policies.engine("run1")
    # the event's redeliveries fail at once: no second build, no second spec lookup
    with pytest.raises(EngineUnavailable):
        await policies.engine("run1")
    assert specs.gets == 1
    policies.forget("run1")
    with pytest.raises(EngineUnavailable):
        await policies.engine("run1")
    assert specs.gets == 2


# ---- CheckRun: what CreateRun asks a worker before the run starts (svc_rollout/checks.py) ----


def test_a_run_this_worker_can_serve_has_no_problem(model_dir):
    assert run_problems(spec(model_dir)) == []


def test_a_model_directory_the_worker_cannot_see_is_a_problem(tmp_path):
    [problem] = run_problems(spec(tmp_path / "elsewhere"))
    assert "no config.json where the rollout workers run" in problem


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_without_vllm_is_a_problem_that_says_how_to_install_it(model_dir):
    assert available_engines() == ["torch"]
    [problem] = run_problems(spec(model_dir, engine="vllm"))
    assert "can build only torch" in problem and "scripts/setup_vllm.sh" in problem
