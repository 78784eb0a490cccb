"""The policies a rollout worker holds: one engine per run and role, kept at the newest announced
version.

Role "policy" follows the weights subject; role "teacher" (Co-rewarding-II's EMA teacher, for
runs that have one) follows the teacher subject and starts, like the policy, from the run's model
directory. Announcements arrive from every replica's own follower (the last one per run first,
so a restarted worker catches up at once). A task admitted at version v waits until the policy
engine holds at least v: in synchronous mode that is exactly the version it was admitted at.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from jetrl.config import RunSpec
from jetrl.logs import log_fields
from jetrl.runs import RunSpecs
from jetrl.v1 import events_pb2
from jetrl.views import TEACHER
from svc_rollout.api import GenerationEngine
from svc_rollout.checks import INSTALL_VLLM
from svc_rollout.weights import WeightSource, WeightsUnavailable, fetched_weights

log = logging.getLogger(__name__)


class EngineUnavailable(RuntimeError):
    """This worker cannot build the engine a run asks for; retrying will not help."""


POLICY = "policy"  # the role of the trained policy; the other is jetrl.views.TEACHER


class Policies:
    def __init__(self, specs: RunSpecs, calls_at_once: int = 1, source: WeightSource | None = None):
        self.specs = specs
        self.source = source  # where new versions come from; None: none do (engines put in by hand)
        self.calls_at_once = calls_at_once  # generate calls the worker makes at once (its task concurrency)
        self.engines: dict[tuple[str, str], GenerationEngine] = {}  # (run id, role) -> engine
        self.announced: dict[tuple[str, str], events_pb2.WeightsAnnouncement] = {}
        self._changed = asyncio.Condition()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._unavailable: dict[tuple[str, str], EngineUnavailable] = {}

    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def engine(self, run_id: str, role: str = POLICY) -> GenerationEngine:
        """The run's engine for `role`, built from the run's model directory (version 0) on first use."""
        key = (run_id, role)
        if key not in self.engines:
            async with self._lock(key):
                if key in self._unavailable:  # the message's retries fail at once, not one build each
                    raise self._unavailable[key]
                if key not in self.engines:
                    spec = await self.specs.get(run_id)
                    try:
                        self.engines[key] = await asyncio.to_thread(_build_engine, spec, self.calls_at_once)
                    except EngineUnavailable as exc:
                        self._unavailable[key] = exc
                        raise
                    log.info("policy loaded", extra=log_fields(run=run_id, role=role, path=spec.model.path))
        return self.engines[key]

    async def on_announcement(self, ann: events_pb2.WeightsAnnouncement, role: str = POLICY) -> None:
        """Remember the newest version; load it now if this worker already serves the run."""
        key = (ann.run_id, role)
        known = self.announced.get(key)
        if known is None or ann.version > known.version:
            self.announced[key] = ann
        if key in self.engines:
            await self._catch_up(key)

    async def _catch_up(self, key: tuple[str, str]) -> None:
        engine = self.engines[key]
        async with self._lock(key):
            ann = self.announced.get(key)
            if ann is None or ann.version <= engine.version:
                return
            if self.source is None:
                raise WeightsUnavailable(f"v{ann.version} of {key[0]} announced to a worker with no weight source")
            async with fetched_weights(ann, self.source, teacher=key[1] == TEACHER) as path:
                await asyncio.to_thread(engine.load_weights, path, ann.version)
        log.info("weights loaded", extra=log_fields(run=key[0], role=key[1], version=ann.version, bytes=ann.size_bytes))
        async with self._changed:
            self._changed.notify_all()

    async def at_least(self, run_id: str, version: int, timeout: float = 120.0, role: str = POLICY) -> GenerationEngine:
        """The run's engine for `role` once it holds `version` or newer; TimeoutError if it never comes."""
        engine = await self.engine(run_id, role)
        await self._catch_up((run_id, role))
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: engine.version >= version), timeout)
        return engine

    def forget(self, run_id: str) -> list[GenerationEngine]:
        """Free a finished or stopped run's models; returns its engines."""
        keys = [k for k in self.engines if k[0] == run_id]
        for k in [k for k in self.announced if k[0] == run_id]:
            del self.announced[k]
        for k in [k for k in self._unavailable if k[0] == run_id]:
            del self._unavailable[k]
        return [self.engines.pop(k) for k in keys]


def _build_engine(spec: RunSpec, calls_at_once: int = 1) -> GenerationEngine:
    """The run's engine at version 0: simulated hardware when the spec asks for it, else the
    spec's `rollout.engine`. Raises EngineUnavailable when this worker cannot build it."""
    from jetrl.policy.load import load_policy, load_tokenizer  # late: transformers is slow to import

    interrupt = spec.rollout.on_new_weights == "interrupt"
    if spec.simulation is not None:
        from svc_rollout.simulated import SimulatedEngine  # benchmarks only

        return SimulatedEngine(spec.simulation, load_tokenizer(spec.model.path), version=0, interrupt=interrupt)
    if spec.rollout.engine == "vllm":
        return _vllm_engine(spec, load_tokenizer(spec.model.path), interrupt)
    from svc_rollout.coalesce import GATHER_S
    from svc_rollout.engine import TorchEngine

    model, tokenizer = load_policy(spec.model.path)
    gather_s = GATHER_S if calls_at_once > 1 else 0.0  # one call at a time: nobody to wait for
    return TorchEngine(model, tokenizer, version=0, interrupt=interrupt, gather_s=gather_s)


def _vllm_engine(spec: RunSpec, tokenizer, interrupt: bool) -> GenerationEngine:
    try:
        from svc_rollout.vllm_engine import VllmEngine
    except ImportError as exc:
        raise EngineUnavailable(
            f"rollout.engine is vllm, but this rollout worker cannot import vLLM ({exc}): {INSTALL_VLLM}, "
            "or set rollout.engine: torch"
        ) from exc
    try:
        return VllmEngine(
            Path(spec.model.path), tokenizer, spec.rollout.vllm, seed=spec.seed, version=0, interrupt=interrupt
        )
    except Exception as exc:  # vLLM reports a model it cannot serve in many ways, all fatal to the run
        raise EngineUnavailable(f"vLLM cannot serve the model at {spec.model.path}: {exc}") from exc
