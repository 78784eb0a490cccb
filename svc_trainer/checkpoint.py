"""Per-run trainer checkpoints: weights of every version, and the state needed to resume.

Layout under JETRL_DATA_DIR:
    runs/<run>/weights/v000001.safetensors   the policy after step 1 (served to rollout workers), in
                                             the starting model's dtype; above train.weights_shard_mb
                                             shards v000001-0000i-of-0000n.safetensors and their index
                                             v000001.safetensors.index.json; old versions pruned by
                                             train.keep_last_versions / keep_every_versions
    runs/<run>/master/v000001.safetensors    the saved version in float32, when published in another
    runs/<run>/trainer.pt                    version, counters, trained batch ids, the engine's record
                                             (the torch engine's AdamW state)
    runs/<run>/deepspeed/v000001/            a DeepSpeed run's ZeRO checkpoint (svc_trainer/deepspeed_engine.py)
Both are written to a temporary name and renamed, so a SIGKILL leaves either the old or the new
file, never half of one. The weights of v are written before the state that says "at v": after a
crash between the two the trainer resumes at v-1 and trains the batch again (same batch, same
version), which is why batches are acked only after the state is saved.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from jetrl.weights import INDEX_SUFFIX, file_sha256


@dataclass
class TrainerState:
    version: int = 0
    samples_trained: int = 0
    batches_trained: int = 0
    trained_batches: list[str] = field(default_factory=list)
    engine: dict | None = None  # the train engine's save_state record (AdamW's state, or where its checkpoint is)
    announcement: bytes = b""  # the last WeightsAnnouncement, re-sent if its batch comes again
    teacher_announcement: bytes = b""  # and the EMA teacher's of the same version (runs with a teacher)
    exact_sha256: str = ""  # of the version's exact weights (master copy, or the published file/index)


def run_dir(data_dir: Path, run_id: str) -> Path:
    return Path(data_dir).resolve() / "runs" / run_id


def weights_path(data_dir: Path, run_id: str, version: int) -> Path:
    return run_dir(data_dir, run_id) / "weights" / f"v{version:06d}.safetensors"


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_weights(path: Path, model: torch.nn.Module, dtype: torch.dtype | None = None, shard_bytes: int = 0) -> Path:
    """A model's weights at `path` (a `v000001.safetensors` name) in `dtype`: one file, or when
    they exceed `shard_bytes` (> 0), shards and an index beside them, the index written last (the
    version exists once it does). Every file is written atomically. Returns the file or the index."""
    from jetrl.policy.load import weight_tensors

    tensors = weight_tensors(model, dtype)
    sizes = {name: t.numel() * t.element_size() for name, t in tensors.items()}
    if not shard_bytes or sum(sizes.values()) <= shard_bytes:
        _write_tensors(path, tensors)
        return path
    groups: list[list[str]] = [[]]
    filled = 0  # bytes in the last shard
    for name in tensors:  # in the model's order, a new shard when the next tensor would not fit
        if groups[-1] and filled + sizes[name] > shard_bytes:
            groups.append([])
            filled = 0
        groups[-1].append(name)
        filled += sizes[name]
    stem = path.name.removesuffix(".safetensors")
    weight_map: dict[str, str] = {}
    checksums: dict[str, str] = {}
    for i, group in enumerate(groups, 1):
        shard = path.with_name(f"{stem}-{i:05d}-of-{len(groups):05d}.safetensors")
        _write_tensors(shard, {n: tensors[n] for n in group})
        checksums[shard.name] = file_sha256(shard)
        weight_map |= dict.fromkeys(group, shard.name)
    index = {"metadata": {"total_size": sum(sizes.values()), "jetrl_sha256": checksums}, "weight_map": weight_map}
    index_path = path.with_name(stem + INDEX_SUFFIX)
    atomic_write(index_path, json.dumps(index, indent=1).encode())
    return index_path


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def published(path: Path) -> Path:
    """The version at a `v000001.safetensors` name as it was written: the file, or its index."""
    index = path.with_name(path.name.removesuffix(".safetensors") + INDEX_SUFFIX)
    return index if index.is_file() else path


def master_path(data_dir: Path, run_id: str, version: int) -> Path:
    """A version in the trainer's own precision (float32), kept when it publishes in another
    (bf16) so a restart resumes from the exact weights; only the saved state's version is kept."""
    return run_dir(data_dir, run_id) / "master" / f"v{version:06d}.safetensors"


def prune_versions(folder: Path, newest: int, keep_last: int, keep_every: int) -> list[int]:
    """Delete the versions in `folder` (their file, or shards and index) outside the retention rule:
    the newest `keep_last` (0: every version) and every `keep_every`-th. Returns those deleted."""
    if not keep_last:
        return []
    deleted = set()
    for file in folder.glob("v*.safetensors*"):
        version = int(file.name[1:7])
        if version > newest - keep_last or (keep_every and version % keep_every == 0):
            continue
        file.unlink(missing_ok=True)
        deleted.add(version)
    return sorted(deleted)


def save_state(data_dir: Path, run_id: str, state: TrainerState) -> None:
    import io

    buf = io.BytesIO()
    torch.save(state.__dict__, buf)
    atomic_write(run_dir(data_dir, run_id) / "trainer.pt", buf.getvalue())


def load_state(data_dir: Path, run_id: str) -> TrainerState | None:
    path = run_dir(data_dir, run_id) / "trainer.pt"
    if not path.exists():
        return None
    # weights_only: tensors, numbers, strings and containers, never an arbitrary pickle; `bytes`
    # (the announcements) is pickled as a call to it, which is safe
    with torch.serialization.safe_globals([bytes]):
        saved = torch.load(path, weights_only=True)
    if "optimizer" in saved:  # written before engines had records: the torch engine's AdamW state
        optimizer = saved.pop("optimizer")
        saved["engine"] = {"optimizer": optimizer} if optimizer else None
    return TrainerState(**saved)
