"""Fetching an announced policy version: the shared file when it is readable, else a gRPC stream.

Measured on this 2-core machine (benchmarks/weight_transfer.py): reading the trainer's file and
streaming it from TrainerService are both far faster than the nats-py object store's get()
(docs/design.md §2), so weights never ride the bus; the announcement says where they are and their sha256.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from urllib.parse import urlparse

from jetrl.rpc import channel
from jetrl.telemetry import Attr, tracer
from jetrl.v1 import events_pb2, services_pb2, services_pb2_grpc


class WeightsUnavailable(RuntimeError):
    """Neither the file nor the trainer's stream gave bytes with the announced checksum."""


def _read_file(uri: str, sha256: str) -> bytes | None:
    parsed = urlparse(uri)
    if parsed.scheme != "file" or not Path(parsed.path).is_file():
        return None
    data = Path(parsed.path).read_bytes()
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


async def stream_weights(
    endpoint: str, run_id: str, version: int, chunk_bytes: int = 0, teacher: bool = False
) -> bytes:
    """All bytes of one version (the policy's, or the EMA teacher's) from TrainerService.FetchWeights,
    checked against its sha256."""
    async with channel(endpoint) as ch:
        stub = services_pb2_grpc.TrainerServiceStub(ch)
        buf = bytearray()
        expected = ""
        request = services_pb2.FetchWeightsRequest(
            run_id=run_id, version=version, chunk_bytes=chunk_bytes, teacher=teacher
        )
        async for chunk in stub.FetchWeights(request, timeout=300):
            if chunk.offset != len(buf):
                raise WeightsUnavailable(f"weights stream out of order at {chunk.offset}")
            expected = expected or chunk.sha256
            buf += chunk.data
    data = bytes(buf)
    if hashlib.sha256(data).hexdigest() != expected:
        raise WeightsUnavailable(f"weights v{version} of {run_id} from {endpoint} fail their checksum")
    return data


async def fetch_weights(ann: events_pb2.WeightsAnnouncement, teacher: bool = False) -> bytes:
    """The announced version's safetensors bytes (of the EMA teacher's stream when `teacher`),
    verified against the announcement."""
    with tracer.start_as_current_span("weights fetch") as span:
        span.set_attributes(
            {
                Attr.RUN_ID: ann.run_id,
                Attr.VERSION: ann.version,
                Attr.BYTES: ann.size_bytes,
                Attr.TEACHER: teacher,
            }
        )
        if ann.uri:
            data = await asyncio.to_thread(_read_file, ann.uri, ann.sha256)
            if data is not None:
                span.set_attribute(Attr.WEIGHTS_PATH, "file")
                return data
        if not ann.grpc_endpoint:
            raise WeightsUnavailable(f"v{ann.version} of {ann.run_id}: {ann.uri} unreadable and no gRPC endpoint")
        span.set_attribute(Attr.WEIGHTS_PATH, "grpc")
        data = await stream_weights(ann.grpc_endpoint, ann.run_id, ann.version, teacher=teacher)
        if hashlib.sha256(data).hexdigest() != ann.sha256:
            raise WeightsUnavailable(f"v{ann.version} of {ann.run_id}: streamed bytes differ from the announcement")
        return data
