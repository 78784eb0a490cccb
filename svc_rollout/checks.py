"""Can this rollout worker serve a run? Asked by CreateRun before the run starts
(RolloutService.CheckRun), so a run it cannot serve is refused with what to change instead of
failing at its first task.

Checked as the worker sees things, which may differ from the scheduler's view: the engine it can
build, the model directory it can read, and for vLLM whether vLLM knows the model's architecture.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

from jetrl.config import RunSpec

__all__ = ["available_engines", "run_problems"]

INSTALL_VLLM = (
    "install vLLM where the rollout workers run (scripts/setup_vllm.sh and start them from .venv-vllm, "
    "or the CUDA image deploy/Dockerfile.cuda)"
)


def available_engines() -> list[str]:
    """The `rollout.engine` values this worker can build: torch always, vllm where vLLM imports."""
    return ["torch", *(["vllm"] if importlib.util.find_spec("vllm") is not None else [])]


@functools.cache
def _vllm_architectures() -> frozenset[str]:
    from vllm import ModelRegistry  # seconds to import, once per process

    return frozenset(ModelRegistry.get_supported_archs())


def run_problems(spec: RunSpec) -> list[str]:
    """Why this worker cannot serve `spec`, each as what to change; empty when it can."""
    if spec.simulation is not None:
        return []  # simulated hardware: no model is run
    engine = spec.rollout.engine
    if engine not in available_engines():
        return [
            f"rollout.engine {engine}: this rollout worker can build only torch; {INSTALL_VLLM}, or set "
            "rollout.engine: torch"
        ]
    config = Path(spec.model.path) / "config.json"
    if not config.is_file():
        return [
            f"model.path {spec.model.path}: no config.json where the rollout workers run; share the "
            "model directory with them (e.g. under JETRL_DATA_DIR)"
        ]
    if engine == "vllm":
        architectures = json.loads(config.read_text()).get("architectures") or []
        if not set(architectures) & _vllm_architectures():
            return [
                f"model.path {spec.model.path}: vLLM cannot serve its architecture {architectures}; "
                "use a model vLLM supports (Llama, Qwen2, Mistral families...) or rollout.engine: torch"
            ]
    return []
