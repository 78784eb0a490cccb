"""DeepSpeed's JSON config for a run (svc_trainer/deepspeed_engine.py checks it before the run,
each rank builds its engine with it): the run spec's `train.deepspeed` section and `train.*`,
over the keys of an optional `config_file`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jetrl.spec_sections import TrainSpec

__all__ = ["OWNED", "ds_config"]

# what the run spec decides, and where: a JSON config may not set these
OWNED = {
    "train_batch_size": "train.deepspeed.micro_batch_size and ranks",
    "train_micro_batch_size_per_gpu": "train.deepspeed.micro_batch_size",
    "gradient_accumulation_steps": "train.deepspeed.micro_batch_size (jetrl accumulates per step)",
    "optimizer": "train.lr and train.weight_decay (AdamW)",
    "scheduler": "train.lr",
    "gradient_clipping": "train.grad_clip",
    "fp16": "train.deepspeed.precision",
    "amp": "train.deepspeed.precision",
    "torch_autocast": "train.deepspeed.precision",
}


def ds_config(train: TrainSpec, world: int) -> dict[str, Any]:
    """DeepSpeed's config for a run: the typed section, merged over `config_file`'s keys. A file
    key the run spec decides (OWNED), or one the section sets to another value, is refused."""
    ds = train.deepspeed
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    # said either way, so a config file cannot turn on what the spec leaves off
    zero["offload_optimizer"] = {"device": "cpu" if ds.offload_optimizer else "none"}
    zero["offload_param"] = {"device": "cpu" if ds.offload_params else "none"}
    ours: dict[str, Any] = {
        # jetrl feeds micro-batches itself and marks the accumulation boundary (deepspeed_rank.py);
        # these only satisfy DeepSpeed's batch-size arithmetic
        "train_micro_batch_size_per_gpu": ds.micro_batch_size,
        "gradient_accumulation_steps": 1,
        "train_batch_size": ds.micro_batch_size * world,
        "gradient_clipping": train.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": ds.precision == "bf16"},
        # the client AdamW (torch's): no JIT-compiled optimizer op, the torch engine's exact update
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 1 << 30,
    }
    if not ds.config_file:
        return ours
    try:
        base = json.loads(Path(ds.config_file).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"train.deepspeed.config_file: cannot read a JSON object from {ds.config_file}: {exc}"
        ) from None
    if not isinstance(base, dict):
        raise ValueError(f"train.deepspeed.config_file {ds.config_file}: not a JSON object")
    for key in sorted(OWNED.keys() & base.keys()):
        raise ValueError(f"train.deepspeed.config_file sets {key!r}: jetrl sets it from {OWNED[key]}")
    return _merge(base, ours, ds.config_file)


def _merge(base: dict[str, Any], ours: dict[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    merged = dict(base)
    for key, value in ours.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value, where, f"{prefix}{key}.")
        elif key in base and base[key] != value:
            raise ValueError(
                f"train.deepspeed.config_file {where} sets {prefix}{key} = {base[key]!r}, "
                f"but the run spec gives {value!r}: set it in train.deepspeed (or drop it from the file)"
            )
        else:
            merged[key] = value
    return merged
