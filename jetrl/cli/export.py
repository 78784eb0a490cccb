"""`jetrl export RUN [--version N] OUT_DIR`: one version of a run as a standard Hugging Face
model directory (config, tokenizer, generation config, safetensors weights).

The run's spec (so, the model it started from) comes from the scheduler and the version's
weights from the trainer's stream (TrainerService.FetchWeights), so it works wherever those two
answer and the starting model's directory is readable. The result loads with transformers'
`from_pretrained` and with vLLM, in the starting model's dtype.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import grpc

from jetrl.config import Settings, parse_spec
from jetrl.policy.load import config_dtype, copy_state, load_policy, read_state_file, save_policy
from jetrl.rpc import channel
from jetrl.v1 import services_pb2, services_pb2_grpc
from jetrl.weights import fetch_version

__all__ = ["ExportError", "export", "main"]

MANIFEST = "jetrl_export.json"  # which run and version the directory holds


class ExportError(ValueError):
    """The export cannot be made as asked (the message says why and what to do)."""


async def export(settings: Settings, run_id: str, version: int | None, out: Path) -> Path:
    """Write `version` (default: the newest the trainer published) of `run_id` to `out`."""
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty: name a new directory")
    async with channel(settings.scheduler_addr, settings) as ch:
        run = await services_pb2_grpc.SchedulerServiceStub(ch).GetRun(
            services_pb2.GetRunRequest(run_id=run_id), timeout=30
        )
    newest = run.progress.policy_version
    version = newest if version is None else version
    if not 0 <= version <= newest:
        raise ExportError(f"run {run_id} has versions 0 to {newest}; --version {version} is not one of them")
    base = Path(parse_spec(run.spec_yaml).model.path)
    model, tokenizer = load_policy(base)
    sha256 = ""
    if version > 0:  # version 0 is the starting model itself
        with tempfile.TemporaryDirectory(prefix="jetrl-export-") as tmp:
            weights, sha256 = await fetch_version(settings.trainer_addr, settings, run_id, version, Path(tmp))
            copy_state(model, read_state_file(model, weights))
    dtype = config_dtype(base)
    if dtype is not None:
        model = model.to(dtype)  # type: ignore[arg-type]  # transformers' wrapped .to, as in load_policy
    save_policy(model, tokenizer, out)
    manifest = {"run_id": run_id, "version": version, "base_model": str(base), "weights_sha256": sha256}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


async def main(settings: Settings, run_id: str, version: int | None, out: Path) -> int:
    """`jetrl export`: 0 with the directory written, 2 with the reason when it cannot be."""
    try:
        written = await export(settings, run_id, version, out)
    except ExportError as exc:
        print(f"jetrl export: {exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as exc:
        print(f"jetrl export: {exc.code().name}: {exc.details()} (is the stack up? jetrl status)", file=sys.stderr)
        return 2
    print(f"wrote {written}: loads with transformers' from_pretrained and with vLLM")
    return 0
