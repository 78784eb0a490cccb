"""Per-run trainer checkpoints: weights of every version, and the state needed to resume.

Layout under JETRL_DATA_DIR:
    runs/<run>/weights/v000001.safetensors   the policy after step 1 (served to rollout workers), in
                                             the starting model's dtype; old ones pruned by
                                             train.keep_last_versions / keep_every_versions
    runs/<run>/master/v000001.safetensors    the saved version in float32, when published in another
    runs/<run>/trainer.pt                    optimizer, version, counters, trained batch ids
Both are written to a temporary name and renamed, so a SIGKILL leaves either the old or the new
file, never half of one. The weights of v are written before the state that says "at v": after a
crash between the two the trainer resumes at v-1 and trains the batch again (same batch, same
version), which is why batches are acked only after the state is saved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class TrainerState:
    version: int = 0
    samples_trained: int = 0
    batches_trained: int = 0
    trained_batches: list[str] = field(default_factory=list)
    optimizer: dict | None = None
    announcement: bytes = b""  # the last WeightsAnnouncement, re-sent if its batch comes again
    teacher_announcement: bytes = b""  # and the EMA teacher's of the same version (runs with a teacher)


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


def save_weights(path: Path, model: torch.nn.Module, dtype: torch.dtype | None = None) -> Path:
    """A model's weights as a safetensors file at `path`, written atomically, in `dtype`."""
    from jetrl.policy.load import save_weights_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_weights_file(model, tmp, dtype)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def master_path(data_dir: Path, run_id: str, version: int) -> Path:
    """A version in the trainer's own precision (float32), kept when it publishes in another
    (bf16) so a restart resumes from the exact weights; only the saved state's version is kept."""
    return run_dir(data_dir, run_id) / "master" / f"v{version:06d}.safetensors"


def prune_versions(folder: Path, newest: int, keep_last: int, keep_every: int) -> list[int]:
    """Delete the per-version files in `folder` outside the retention rule: the newest
    `keep_last` (0: every version) and every `keep_every`-th. Returns the versions deleted."""
    if not keep_last:
        return []
    deleted = []
    for file in folder.glob("v*.safetensors"):
        version = int(file.stem[1:])
        if version > newest - keep_last or (keep_every and version % keep_every == 0):
            continue
        file.unlink(missing_ok=True)
        deleted.append(version)
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
    return TrainerState(**torch.load(path, weights_only=False))
