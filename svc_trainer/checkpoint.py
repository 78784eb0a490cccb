"""Per-run trainer checkpoints: weights of every version, and the state needed to resume.

Layout under JETRL_DATA_DIR:
    runs/<run>/weights/v000001.safetensors   the policy after step 1 (served to rollout workers)
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


def save_weights(data_dir: Path, run_id: str, version: int, blob: bytes) -> Path:
    path = weights_path(data_dir, run_id, version)
    atomic_write(path, blob)
    return path


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
