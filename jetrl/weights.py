"""A version's weights on the move: its files, their checksums, and TrainerService's stream of them.

A version is one safetensors file, or, when it is bigger than `train.weights_shard_mb`, shards
with an index (`v000001.safetensors.index.json`, Hugging Face's layout: `weight_map` from tensor
to shard), whose metadata carries each shard's sha256. The announcement names the single file or
the index and its sha256, so one checksum covers every byte. Used by the trainer, the rollout
workers (svc_rollout/weights.py) and `jetrl export`; nothing here holds a whole model as `bytes`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from jetrl.config import Settings
from jetrl.rpc import channel
from jetrl.rpc_security import ClientCredentials
from jetrl.v1 import services_pb2, services_pb2_grpc

__all__ = [
    "INDEX_SUFFIX",
    "WeightsUnavailable",
    "file_sha256",
    "fetch_version",
    "shard_checksums",
    "stream_weights",
    "verified",
    "version_files",
]

INDEX_SUFFIX = ".safetensors.index.json"
_CHUNK = 1 << 20


class WeightsUnavailable(RuntimeError):
    """No bytes with the expected checksum: neither the shared file nor the trainer's stream."""


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def shard_checksums(index: Path) -> dict[str, str]:
    """Shard file name -> sha256, from a sharded version's index."""
    return dict(json.loads(index.read_text())["metadata"]["jetrl_sha256"])


def version_files(path: Path) -> list[Path]:
    """The safetensors files of a version named by its single file or its index."""
    return [path.parent / name for name in shard_checksums(path)] if path.name.endswith(INDEX_SUFFIX) else [path]


def verified(path: Path, sha256: str) -> bool:
    """Whether the version at `path` holds the announced bytes: its file (or index) has `sha256`
    and every shard the checksum its index gives."""
    if not path.is_file() or file_sha256(path) != sha256:
        return False
    files = version_files(path)
    if files == [path]:
        return True
    expected = shard_checksums(path)
    return all(f.is_file() and file_sha256(f) == expected[f.name] for f in files)


async def stream_weights(
    endpoint: str,
    credentials: Settings | ClientCredentials,
    run_id: str,
    version: int,
    dest_dir: Path,
    *,
    file: str = "",
    chunk_bytes: int = 0,
    teacher: bool = False,
) -> tuple[Path, str]:
    """One file of a version (the policy's, or the EMA teacher's) from TrainerService.FetchWeights
    into `dest_dir`, under the name the stream gives, checked against the sha256 it carries: the
    version's single file or index when `file` is empty, else that shard. Returns the file and
    its sha256 (hashed as it streamed: no second read)."""
    digest = hashlib.sha256()
    expected, name, written = "", "", 0
    async with channel(endpoint, credentials) as ch:
        stub = services_pb2_grpc.TrainerServiceStub(ch)
        request = services_pb2.FetchWeightsRequest(
            run_id=run_id, version=version, chunk_bytes=chunk_bytes, teacher=teacher, file=file
        )
        out = None
        try:
            async for chunk in stub.FetchWeights(request, timeout=300):
                if chunk.offset != written:
                    raise WeightsUnavailable(f"weights stream out of order at {chunk.offset}")
                if out is None:
                    expected, name = chunk.sha256, Path(chunk.name).name  # a bare name, never a path
                    out = (dest_dir / name).open("wb")
                digest.update(chunk.data)
                out.write(chunk.data)
                written += len(chunk.data)
        finally:
            if out is not None:
                out.close()
    if out is None or digest.hexdigest() != expected:
        raise WeightsUnavailable(f"weights v{version} of {run_id} from {endpoint} fail their checksum")
    return dest_dir / name, expected


async def fetch_version(
    endpoint: str,
    credentials: Settings | ClientCredentials,
    run_id: str,
    version: int,
    dest_dir: Path,
    *,
    teacher: bool = False,
    expected: str = "",
) -> tuple[Path, str]:
    """Every file of a version from the trainer's stream into `dest_dir`, each checked (the main
    one against `expected` when given, e.g. the announcement's sha256); returns the single file or
    the index, as an engine loads it, and its sha256."""
    main, sha256 = await stream_weights(endpoint, credentials, run_id, version, dest_dir, teacher=teacher)
    if expected and sha256 != expected:
        raise WeightsUnavailable(f"v{version} of {run_id}: streamed bytes differ from the announcement")
    if main.name.endswith(INDEX_SUFFIX):
        for name, want in shard_checksums(main).items():
            _, got = await stream_weights(endpoint, credentials, run_id, version, dest_dir, file=name, teacher=teacher)
            if got != want:
                raise WeightsUnavailable(f"shard {name} of v{version} of {run_id} differs from its index")
    return main, sha256
