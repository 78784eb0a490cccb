"""How fast can a rollout worker get a new policy version? Three paths, side by side, one run.

  file      read the trainer's safetensors file from a shared filesystem (+ sha256)
  grpc      TrainerService.FetchWeights streamed in 1 MiB chunks (+ sha256), the real servicer
  objstore  nats-py object store put/get (the path docs/design.md §2 warns about)

Run:  .venv/bin/python benchmarks/weight_transfer.py [--sizes-mb 4 64 256]
It starts its own nats-server on a free port and a gRPC server in-process; it needs nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
import time
from pathlib import Path

import nats
from rich.console import Console
from rich.table import Table

from jetrl.localstack import free_port, start_nats_server, stop_process
from jetrl.rpc_security import LOCAL, ServerSecurity
from jetrl.service import grpc_server
from jetrl.weights import stream_weights
from svc_rollout.weights import _shared_file
from svc_trainer.checkpoint import atomic_write, weights_path
from svc_trainer.server import TrainerServicer, register
from svc_trainer.worker import Trainer


async def timed(fn, *args) -> float:
    start = time.perf_counter()
    await fn(*args)
    return time.perf_counter() - start


def rate(mb: int, seconds: float | None) -> str:
    return f"{mb / seconds:,.0f}" if seconds else "skipped"


async def bench(sizes_mb: list[int], objstore_max_mb: int) -> Table:
    tmp = Path(tempfile.mkdtemp(prefix="jetrl-bench-"))
    port = free_port()
    nats_proc = start_nats_server(port, tmp / "js")
    nc = await nats.connect(f"nats://127.0.0.1:{port}", max_reconnect_attempts=1)
    js = nc.jetstream()
    server = grpc_server(ServerSecurity(), options=[("grpc.max_send_message_length", 64 << 20)])
    # FetchWeights reads the checkpoint directory only: the trainer needs no bus and no run specs here
    register(TrainerServicer(Trainer(None, None, tmp, "")))(server)  # type: ignore[arg-type]
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    table = Table(title="weight transfer, MB/s (higher is better)")
    for col in ("size", "file", "grpc stream", "object store get", "grpc / objstore"):
        table.add_column(col, justify="right")
    try:
        for mb in sizes_mb:
            blob = os.urandom(mb << 20)
            digest = hashlib.sha256(blob).hexdigest()
            path = weights_path(tmp, "bench", mb)
            atomic_write(path, blob)
            t_file = await timed(asyncio.to_thread, _shared_file, path.as_uri(), digest, tmp)
            t_grpc = await timed(stream_weights, f"127.0.0.1:{grpc_port}", LOCAL, "bench", mb, tmp)
            t_obj = None
            if mb <= objstore_max_mb:  # the object store's get is so slow that big sizes take minutes
                store = await js.create_object_store(f"bench{mb}")
                await store.put("w", blob)
                t_obj = await timed(store.get, "w")
            ratio = f"{t_obj / t_grpc:,.1f}x" if t_obj else "-"
            table.add_row(f"{mb} MiB", rate(mb, t_file), rate(mb, t_grpc), rate(mb, t_obj), ratio)
    finally:
        await server.stop(None)
        await nc.close()
        stop_process(nats_proc)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[4, 64, 256])
    parser.add_argument("--objstore-max-mb", type=int, default=64)
    args = parser.parse_args()
    Console().print(asyncio.run(bench(args.sizes_mb, args.objstore_max_mb)))


if __name__ == "__main__":
    main()
