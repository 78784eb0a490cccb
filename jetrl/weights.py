"""A version's weights on the move: their checksum, and TrainerService's stream of them.

Used by the rollout workers (svc_rollout/weights.py) and by `jetrl export`; nothing here holds a
whole model as one `bytes`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from jetrl.rpc import channel
from jetrl.v1 import services_pb2, services_pb2_grpc

__all__ = ["WeightsUnavailable", "file_sha256", "stream_weights"]

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


async def stream_weights(
    endpoint: str, run_id: str, version: int, dest: Path, chunk_bytes: int = 0, teacher: bool = False
) -> str:
    """Write one version (the policy's, or the EMA teacher's) from TrainerService.FetchWeights to
    `dest`, checked against the sha256 the stream carries; returns that sha256."""
    digest = hashlib.sha256()
    expected, written = "", 0
    async with channel(endpoint) as ch:
        stub = services_pb2_grpc.TrainerServiceStub(ch)
        request = services_pb2.FetchWeightsRequest(
            run_id=run_id, version=version, chunk_bytes=chunk_bytes, teacher=teacher
        )
        with dest.open("wb") as out:
            async for chunk in stub.FetchWeights(request, timeout=300):
                if chunk.offset != written:
                    raise WeightsUnavailable(f"weights stream out of order at {chunk.offset}")
                expected = expected or chunk.sha256
                digest.update(chunk.data)
                out.write(chunk.data)
                written += len(chunk.data)
    if digest.hexdigest() != expected:
        raise WeightsUnavailable(f"weights v{version} of {run_id} from {endpoint} fail their checksum")
    return expected
