"""Run specs as the scheduler validated them, fetched once per run over gRPC and cached, and the
other facts a worker asks the scheduler for (a run's state, a sealed batch's digest).

Workers learn everything about a run (model directory, sampling, reward endpoint, optimizer)
from the scheduler's GetRun, so a run spec is validated in one place only.
"""

from __future__ import annotations

import asyncio

import grpc

from jetrl.config import RunSpec, parse_spec
from jetrl.rpc import channel
from jetrl.rpc_security import ClientCredentials
from jetrl.v1 import services_pb2, services_pb2_grpc


class RunNotFound(LookupError):
    """The scheduler does not know the run, or the batch (a forged or stale event)."""


class RunSpecs:
    def __init__(self, scheduler_addr: str, credentials: ClientCredentials):
        self._channel = channel(scheduler_addr, credentials)
        self._stub = services_pb2_grpc.SchedulerServiceStub(self._channel)
        self._specs: dict[str, RunSpec] = {}
        self._lock = asyncio.Lock()

    async def get(self, run_id: str) -> RunSpec:
        """The run's spec; raises RunNotFound for an unknown run (other errors propagate, so the event is retried)."""
        if run_id in self._specs:
            return self._specs[run_id]
        async with self._lock:
            if run_id not in self._specs:
                run = await self.fetch(run_id)
                self._specs[run_id] = parse_spec(run.spec_yaml)
        return self._specs[run_id]

    async def fetch(self, run_id: str) -> services_pb2.Run:
        """The run with its live progress (state, version), uncached."""
        try:
            return await self._stub.GetRun(services_pb2.GetRunRequest(run_id=run_id), timeout=10)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise RunNotFound(f"run {run_id!r} is unknown to the scheduler") from None
            raise

    async def batch_digest(self, run_id: str, batch_id: str) -> str:
        """The digest of the batch lineage sealed under `batch_id` (jetrl/digest.py); raises
        RunNotFound when the run sealed no such batch."""
        try:
            reply = await self._stub.GetBatchDigest(
                services_pb2.GetBatchDigestRequest(run_id=run_id, batch_id=batch_id), timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise RunNotFound(exc.details() or f"no batch {batch_id!r} in run {run_id!r}") from None
            raise
        return reply.sha256

    async def close(self) -> None:
        await self._channel.close()
