"""The policies a rollout worker holds: one engine per run, kept at the newest announced version.

Announcements arrive from every replica's own follower of the weights subject (the last one per
run first, so a restarted worker catches up at once). A task admitted at version v waits until
the engine holds at least v: in synchronous mode that is exactly the version it was admitted at.
"""

from __future__ import annotations

import asyncio
import logging

from jetrl.config import RunSpec
from jetrl.logs import log_fields
from jetrl.runs import RunSpecs
from jetrl.v1 import events_pb2
from svc_rollout.weights import fetch_weights

log = logging.getLogger(__name__)


class Policies:
    def __init__(self, specs: RunSpecs):
        self.specs = specs
        self.engines: dict = {}
        self.announced: dict[str, events_pb2.WeightsAnnouncement] = {}
        self._changed = asyncio.Condition()
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, run_id: str) -> asyncio.Lock:
        return self._locks.setdefault(run_id, asyncio.Lock())

    async def engine(self, run_id: str):
        """The run's engine, built from the run's model directory (version 0) on first use."""
        if run_id not in self.engines:
            async with self._lock(run_id):
                if run_id not in self.engines:
                    spec = await self.specs.get(run_id)
                    self.engines[run_id] = await asyncio.to_thread(_build_engine, spec)
                    log.info("policy loaded", extra=log_fields(run=run_id, path=spec.model.path))
        return self.engines[run_id]

    async def on_announcement(self, ann: events_pb2.WeightsAnnouncement) -> None:
        """Remember the newest version; load it now if this worker already serves the run."""
        known = self.announced.get(ann.run_id)
        if known is None or ann.version > known.version:
            self.announced[ann.run_id] = ann
        if ann.run_id in self.engines:
            await self._catch_up(ann.run_id)

    async def _catch_up(self, run_id: str) -> None:
        engine = self.engines[run_id]
        async with self._lock(run_id):
            ann = self.announced.get(run_id)
            if ann is None or ann.version <= engine.version:
                return
            data = await fetch_weights(ann)
            await asyncio.to_thread(engine.load_weights, data, ann.version)
        log.info("weights loaded", extra=log_fields(run=run_id, version=ann.version, bytes=len(data)))
        async with self._changed:
            self._changed.notify_all()

    async def at_least(self, run_id: str, version: int, timeout: float = 120.0):
        """The run's engine once it holds `version` or newer; TimeoutError if it never comes."""
        engine = await self.engine(run_id)
        await self._catch_up(run_id)
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: engine.version >= version), timeout)
        return engine

    def forget(self, run_id: str):
        """Free a finished or stopped run's model; returns its engine (None if it had none)."""
        self.announced.pop(run_id, None)
        return self.engines.pop(run_id, None)


def _build_engine(spec: RunSpec):
    """The run's engine at version 0: simulated hardware when the spec asks for it, else torch."""
    from jetrl.policy.load import load_policy, load_tokenizer  # late: transformers is slow to import

    interrupt = spec.rollout.on_new_weights == "interrupt"
    if spec.simulation is not None:
        from svc_rollout.simulated import SimulatedEngine  # benchmarks only

        return SimulatedEngine(spec.simulation, load_tokenizer(spec.model.path), version=0, interrupt=interrupt)
    from svc_rollout.engine import TorchEngine

    model, tokenizer = load_policy(spec.model.path)
    return TorchEngine(model, tokenizer, version=0, interrupt=interrupt)
