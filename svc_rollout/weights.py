"""Fetching an announced policy version as a local, verified safetensors file.

The shared file is used in place when it is readable and matches the announced sha256; else the
version is streamed from TrainerService.FetchWeights into a temporary file. Either way the
checksum is computed chunk by chunk and nothing holds the whole model as one `bytes`: an engine
loads from the file (mmap for torch, its own loader for vLLM).

Measured on this 2-core machine (benchmarks/weight_transfer.py): reading the trainer's file and
streaming it from TrainerService are both far faster than the nats-py object store's get()
(docs/design.md §2), so weights never ride the bus; the announcement says where they are and their sha256.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlparse

from jetrl.telemetry import Attr, tracer
from jetrl.v1 import events_pb2
from jetrl.weights import WeightsUnavailable, file_sha256, stream_weights

__all__ = ["WeightsUnavailable", "fetched_weights"]


def _shared_file(uri: str, sha256: str) -> Path | None:
    """The announced file when this process can read it and it holds the announced bytes."""
    parsed = urlparse(uri)
    path = Path(parsed.path)
    if parsed.scheme != "file" or not path.is_file():
        return None
    return path if file_sha256(path) == sha256 else None


@asynccontextmanager
async def fetched_weights(ann: events_pb2.WeightsAnnouncement, teacher: bool = False) -> AsyncIterator[Path]:
    """The announced version (of the EMA teacher's stream when `teacher`) as a verified local
    file: the shared file itself, or a temporary copy from the trainer's stream, removed on exit."""
    with tracer.start_as_current_span("weights fetch") as span:
        span.set_attributes(
            {Attr.RUN_ID: ann.run_id, Attr.VERSION: ann.version, Attr.BYTES: ann.size_bytes, Attr.TEACHER: teacher}
        )
        shared = await asyncio.to_thread(_shared_file, ann.uri, ann.sha256) if ann.uri else None
        if shared is not None:
            span.set_attribute(Attr.WEIGHTS_PATH, "file")
            yield shared
            return
        if not ann.grpc_endpoint:
            raise WeightsUnavailable(f"v{ann.version} of {ann.run_id}: {ann.uri} unreadable and no gRPC endpoint")
        span.set_attribute(Attr.WEIGHTS_PATH, "grpc")
        fd, name = tempfile.mkstemp(prefix=f"jetrl-{ann.run_id}-v{ann.version}-", suffix=".safetensors")
        os.close(fd)
        spool = Path(name)
        try:
            streamed = await stream_weights(ann.grpc_endpoint, ann.run_id, ann.version, spool, teacher=teacher)
            if streamed != ann.sha256:
                raise WeightsUnavailable(f"v{ann.version} of {ann.run_id}: streamed bytes differ from the announcement")
            yield spool
        finally:
            spool.unlink(missing_ok=True)
