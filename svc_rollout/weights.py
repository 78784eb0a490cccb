"""Fetching an announced policy version as local, verified safetensors files.

The shared files are used in place when they are inside the worker's data directory and match
the announced sha256 (an index's shards their own); else the version is streamed from the
worker's own trainer's FetchWeights into a temporary directory (WeightSource). Either way
checksums are computed chunk by chunk and nothing holds the whole model as one `bytes`: an
engine loads from the files (jetrl.weights.version_files).

Measured on this 2-core machine (benchmarks/weight_transfer.py): reading the trainer's file and
streaming it from TrainerService are both far faster than the nats-py object store's get()
(docs/design.md §2), so weights never ride the bus; the announcement says where they are and their sha256.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from jetrl.config import Settings
from jetrl.rpc_security import LOCAL, ClientCredentials
from jetrl.telemetry import Attr, tracer
from jetrl.v1 import events_pb2
from jetrl.weights import WeightsUnavailable, fetch_version, verified

__all__ = ["WeightSource", "WeightsUnavailable", "fetched_weights"]


@dataclass(frozen=True)
class WeightSource:
    """Where a worker takes announced versions from. An announcement says where its bytes are,
    but whoever can publish one could point it anywhere (a zeroed copy with its own correct
    sha256, a server of theirs): a shared file is used only inside this worker's data directory
    (the volume it shares with the trainer), and a stream only from its own trainer address
    setting, whatever the announcement names."""

    data_dir: Path
    trainer_addr: str  # empty: no stream, the shared files only
    credentials: ClientCredentials = LOCAL

    @classmethod
    def of(cls, settings: Settings) -> WeightSource:
        return cls(settings.data_dir, settings.trainer_addr, ClientCredentials.of(settings))


def _shared_file(uri: str, sha256: str, data_dir: Path) -> Path | None:
    """The announced version when it is a file inside `data_dir` that holds the announced bytes."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    path = Path(parsed.path).resolve()  # no '..' or link out of the data directory
    if not path.is_relative_to(data_dir.resolve()):
        return None
    return path if verified(path, sha256) else None


@asynccontextmanager
async def fetched_weights(
    ann: events_pb2.WeightsAnnouncement, source: WeightSource, teacher: bool = False
) -> AsyncIterator[Path]:
    """The announced version (of the EMA teacher's stream when `teacher`) as verified local files,
    named by the single file or the shards' index: the shared ones in place, or copies from the
    trainer's stream in a temporary directory, removed on exit."""
    with tracer.start_as_current_span("weights fetch") as span:
        span.set_attributes(
            {Attr.RUN_ID: ann.run_id, Attr.VERSION: ann.version, Attr.BYTES: ann.size_bytes, Attr.TEACHER: teacher}
        )
        shared = await asyncio.to_thread(_shared_file, ann.uri, ann.sha256, source.data_dir) if ann.uri else None
        if shared is not None:
            span.set_attribute(Attr.WEIGHTS_PATH, "file")
            yield shared
            return
        if not source.trainer_addr:
            raise WeightsUnavailable(
                f"v{ann.version} of {ann.run_id}: {ann.uri} is not in {source.data_dir} or not the announced "
                "bytes, and this worker has no trainer address to stream it from"
            )
        span.set_attribute(Attr.WEIGHTS_PATH, "grpc")
        with tempfile.TemporaryDirectory(prefix=f"jetrl-{ann.run_id}-v{ann.version}-") as spool:
            main, _ = await fetch_version(
                source.trainer_addr,
                source.credentials,
                ann.run_id,
                ann.version,
                Path(spool),
                teacher=teacher,
                expected=ann.sha256,
            )
            yield main
