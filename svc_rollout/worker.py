"""The rollout worker: takes tasks from the shared durable consumer, generates, publishes samples.

Samples are published (with their deterministic ids, so a re-generated one is dropped as a
duplicate) before the task is acked: a worker killed mid-task leaves the task to be redelivered
to another replica, and nothing is lost or counted twice.
"""

from __future__ import annotations

import asyncio
import logging

from jetrl.bus import Delivery, InvalidEvent, Kind, publish
from jetrl.logs import log_fields
from jetrl.runs import RunNotFound
from jetrl.telemetry import tracer
from jetrl.v1 import events_pb2
from svc_rollout.engine import GenRequest
from svc_rollout.policies import Policies

log = logging.getLogger(__name__)


class RolloutWorker:
    def __init__(self, js, policies: Policies, worker_id: str):
        self.js = js
        self.policies = policies
        self.worker_id = worker_id
        self.ended_runs: set[str] = set()
        self.samples_generated = 0
        self.tokens_generated = 0

    async def on_task(self, task: events_pb2.Task, delivery: Delivery) -> None:
        if task.run_id in self.ended_runs:
            return  # the run was stopped or completed: its leftover work is dropped, on purpose
        try:
            await self.policies.specs.get(task.run_id)
        except RunNotFound as exc:
            raise InvalidEvent(str(exc)) from None
        engine = await self.policies.at_least(task.run_id, task.policy_version)
        s = task.sampling
        requests = [
            GenRequest(
                prompt_token_ids=list(task.prompt_token_ids), max_new_tokens=s.max_new_tokens,
                temperature=s.temperature, top_p=s.top_p, seed=s.seed * 1024 + i,
            )
            for i in range(task.num_samples)
        ]
        with tracer.start_as_current_span("generate") as span:
            span.set_attributes({"jetrl.group_id": task.group_id, "jetrl.samples": task.num_samples})
            results = await asyncio.to_thread(engine.generate, requests)
        for i, r in enumerate(results):
            sample = events_pb2.Sample(
                run_id=task.run_id, group_id=task.group_id, sample_id=f"{task.group_id}.{i}", index=i,
                prompt_token_ids=task.prompt_token_ids, completion_token_ids=r.token_ids, logprobs=r.logprobs,
                token_versions=r.versions, text=r.text, finish_reason=r.finish_reason,
                worker_id=self.worker_id, temperature=s.temperature,
            )
            await publish(self.js, task.run_id, Kind.ROLLOUTS, sample, msg_id=sample.sample_id)
            self.tokens_generated += len(r.token_ids)
        self.samples_generated += len(results)
        log.debug("task done", extra=log_fields(group=task.group_id, samples=len(results)))

    async def on_control(self, control: events_pb2.Control, delivery: Delivery) -> None:
        if control.kind in (events_pb2.Control.STOP, events_pb2.Control.COMPLETED):
            self.ended_runs.add(control.run_id)
            self.policies.forget(control.run_id)
