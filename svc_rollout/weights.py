"""Fetching an announced policy version as local, verified safetensors files.

The shared files are used in place when they are readable and match the announced sha256 (an
index's shards their own); else the version is streamed from TrainerService.FetchWeights into a
temporary directory. Either way checksums are computed chunk by chunk and nothing holds the whole
model as one `bytes`: an engine loads from the files (jetrl.weights.version_files).

Measured on this 2-core machine (benchmarks/weight_transfer.py): reading the trainer's file and
streaming it from TrainerService are both far faster than the nats-py object store's get()
(docs/design.md §2), so weights never ride the bus; the announcement says where they are and their sha256.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlparse

from jetrl.rpc_security import ClientCredentials
from jetrl.telemetry import Attr, tracer
from jetrl.v1 import events_pb2
from jetrl.weights import WeightsUnavailable, fetch_version, verified

__all__ = ["WeightsUnavailable", "fetched_weights"]


def _shared_file(uri: str, sha256: str) -> Path | None:
    """The announced version when this process can read it and it holds the announced bytes."""
    parsed = urlparse(uri)
    path = Path(parsed.path)
    if parsed.scheme != "file":
        return None
    return path if verified(path, sha256) else None


@asynccontextmanager
async def fetched_weights(
    ann: events_pb2.WeightsAnnouncement, credentials: ClientCredentials, teacher: bool = False
) -> AsyncIterator[Path]:
    """The announced version (of the EMA teacher's stream when `teacher`) as verified local files,
    named by the single file or the shards' index: the shared ones in place, or copies from the
    trainer's stream (called with `credentials`) in a temporary directory, removed on exit."""
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
            raise WeightsUnavailable(
                f"v{ann.version} of {ann.run_id}: {ann.uri} is not here or not the announced bytes, "
                "and no gRPC endpoint"
            )
        span.set_attribute(Attr.WEIGHTS_PATH, "grpc")
        with tempfile.TemporaryDirectory(prefix=f"jetrl-{ann.run_id}-v{ann.version}-") as spool:
            main, _ = await fetch_version(
                ann.grpc_endpoint,
                credentials,
                ann.run_id,
                ann.version,
                Path(spool),
                teacher=teacher,
                expected=ann.sha256,
            )
            yield main
