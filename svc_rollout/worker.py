"""The rollout worker: takes tasks from the shared durable consumer, generates, publishes samples.

A task attempt's samples are published as one Rollout (with a deterministic id, so a re-generated
one is dropped as a duplicate) before the task is acked: a worker killed mid-task leaves the task
to be redelivered to another replica, and nothing is lost or counted twice.

APRIL: a Control ABORT names task attempts to stop. Their samples still decoding end at the next
token and are published as partial ("aborted") samples carrying every token so far, prefix
included; a task whose attempt was aborted before it was picked up hands back its prefixes at
once. The Rollout's id names its attempt, so a later attempt's is never taken for a duplicate.

Held-out evaluations come as EvalRequest events on a work queue, so whichever worker is alive
takes one; the result goes back as an Evaluation event.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from jetrl.bus import Delivery, InvalidEvent, Kind, publish
from jetrl.ids import eval_msg_id, rollout_msg_id, sample_id
from jetrl.logs import log_fields
from jetrl.metrics import TOKENS_GENERATED
from jetrl.runs import RunNotFound
from jetrl.states import FinishReason
from jetrl.tasks import make_task
from jetrl.telemetry import Attr, tracer
from jetrl.v1 import events_pb2, services_pb2
from jetrl.views import MAIN, TEACHER
from svc_rollout.api import GenRequest, GenResult
from svc_rollout.policies import Policies

log = logging.getLogger(__name__)


class AbortedAttempts:
    """The (group, attempt) pairs ABORT events named, per run; read from generation threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._runs: dict[str, set[tuple[str, int]]] = {}

    def add(self, run_id: str, refs) -> None:
        with self._lock:
            self._runs.setdefault(run_id, set()).update((r.group_id, r.attempt) for r in refs)

    def __contains__(self, key: tuple[str, str, int]) -> bool:
        run_id, group_id, attempt = key
        with self._lock:
            return (group_id, attempt) in self._runs.get(run_id, ())

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)


def requests_for(task: events_pb2.Task) -> list[tuple[int, GenRequest]]:
    """(sample index, request) of every sample the task asks for: all G at attempt 0, else the
    listed unfinished ones, each continuing its prefix within the whole completion's cap."""
    s = task.sampling
    if task.attempt == 0:
        prefixes = [events_pb2.Prefix(index=task.first_index + i) for i in range(task.num_samples)]
    else:
        prefixes = list(task.resume)
    return [
        (
            p.index,
            GenRequest(
                prompt_token_ids=list(task.prompt_token_ids),
                max_new_tokens=max(s.max_new_tokens - len(p.token_ids), 0),
                temperature=s.temperature,
                top_p=s.top_p,
                seed=s.seed * 1024 + p.index + 7919 * task.attempt,
                prefix_token_ids=list(p.token_ids),
                prefix_logprobs=list(p.logprobs),
                prefix_versions=list(p.token_versions),
            ),
        )
        for p in prefixes
    ]


class RolloutWorker:
    """Handles tasks (up to `concurrency` at once, each generating on a thread of its own) and
    control events."""

    def __init__(self, js, policies: Policies, worker_id: str, concurrency: int = 1):
        self.js = js
        self.policies = policies
        self.worker_id = worker_id
        self.ended_runs: set[str] = set()
        self.aborted = AbortedAttempts()
        self.samples_generated = 0  # finished samples ("eos" or "length")
        self.samples_aborted = 0  # partial samples handed back
        self.tokens_generated = 0  # new tokens only: a prefix was counted by the attempt that made it
        self._busy_retired = 0.0  # busy seconds of the engines of ended runs
        # asyncio's default pool has a handful of threads: it would cap the tasks generating at once
        self._threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="generate")

    @property
    def busy_seconds(self) -> float:
        """Decoding wall time of this worker's engines, those of ended runs included."""
        return self._busy_retired + sum(e.busy_seconds for e in list(self.policies.engines.values()))

    async def on_task(self, task: events_pb2.Task, delivery: Delivery) -> None:
        if task.run_id in self.ended_runs:
            return  # the run was stopped or completed: its leftover work is dropped, on purpose
        try:
            await self.policies.specs.get(task.run_id)
        except RunNotFound as exc:
            raise InvalidEvent(str(exc)) from None
        indexed = requests_for(task)
        if not indexed:
            # a group resumed as its last samples were being recorded has nothing left to generate:
            # there is no Rollout to publish (the bus refuses an empty one), and every sample of the
            # group is recorded, so the scheduler publishes it as complete
            log.debug("task has nothing to generate", extra=log_fields(group=task.group_id, attempt=task.attempt))
            return
        requests = [r for _, r in indexed]
        key = (task.run_id, task.group_id, task.attempt)
        if key in self.aborted:
            # aborted before it started: hand the prefixes back untouched, no need for the new weights
            engine = await self.policies.engine(task.run_id)
            results = [_unstarted(r, engine.tokenizer) for r in requests]
        else:
            if task.view == TEACHER:  # the EMA teacher's samples: its newest weights, whatever the version
                engine = await self.policies.at_least(task.run_id, 0, role=TEACHER)
            else:
                engine = await self.policies.at_least(task.run_id, task.policy_version)
            with tracer.start_as_current_span("generate") as span:
                span.set_attributes(
                    {
                        Attr.GROUP_ID: task.group_id,
                        Attr.SAMPLES: len(requests),
                        Attr.ATTEMPT: task.attempt,
                        Attr.VIEW: task.view,
                    }
                )
                context = contextvars.copy_context()  # the trace context, as asyncio.to_thread would pass it
                results = await asyncio.get_running_loop().run_in_executor(
                    self._threads, context.run, engine.generate, requests, lambda: key in self.aborted
                )
        view = task.view or MAIN
        rollout = events_pb2.Rollout(
            run_id=task.run_id,
            group_id=task.group_id,
            attempt=task.attempt,
            view=view,
            samples=[
                self._sample(task, view, index, len(request.prefix_token_ids), r)
                for (index, request), r in zip(indexed, results)
            ],
        )
        await publish(
            self.js, task.run_id, Kind.ROLLOUTS, rollout, msg_id=rollout_msg_id(task.group_id, task.attempt, view)
        )
        for sample in rollout.samples:  # counted once published: a redelivered task is counted by whoever publishes it
            new = len(sample.completion_token_ids) - sample.prefix_len
            self.tokens_generated += new
            TOKENS_GENERATED.add(new)  # Prometheus's rate() of it: tokens/s
            if sample.finish_reason == FinishReason.ABORTED:
                self.samples_aborted += 1
            else:
                self.samples_generated += 1
        log.debug("task done", extra=log_fields(group=task.group_id, attempt=task.attempt, samples=len(results)))

    def _sample(self, task: events_pb2.Task, view: str, index: int, prefix_len: int, r: GenResult) -> events_pb2.Sample:
        return events_pb2.Sample(
            run_id=task.run_id,
            group_id=task.group_id,
            sample_id=sample_id(task.group_id, index),
            index=index,
            prompt_token_ids=task.prompt_token_ids,
            completion_token_ids=r.token_ids,
            logprobs=r.logprobs,
            token_versions=r.versions,
            text=r.text,
            finish_reason=r.finish_reason,
            worker_id=self.worker_id,
            temperature=task.sampling.temperature,
            attempt=task.attempt,
            prefix_len=prefix_len,
            view=view,
        )

    async def evaluate(self, run_id: str, min_version: int, limit: int = 0) -> tuple[int, int, int]:
        """(version, correct, total): greedy held-out accuracy of the run's policy at `min_version`
        or newer (the version the engine holds when it starts), on the first `limit` problems (0: all).
        Raises RunNotFound for an unknown run, TimeoutError when the version does not come."""
        spec = await self.policies.specs.get(run_id)
        engine = await self.policies.at_least(run_id, min_version)
        problems = make_task(spec.task).heldout()
        if limit:
            problems = problems[:limit]
        version = engine.version  # evaluate exactly what the engine holds now
        correct, total = await asyncio.to_thread(
            engine.evaluate, problems, max_new_tokens=spec.rollout.max_new_tokens, chat=spec.task.chat_template
        )
        return version, correct, total

    async def on_eval_request(self, request: events_pb2.EvalRequest, delivery: Delivery) -> None:
        if request.run_id in self.ended_runs:
            return  # the run ended: nobody waits for this evaluation any more
        try:
            version, correct, total = await self.evaluate(request.run_id, request.min_version)
        except RunNotFound as exc:
            raise InvalidEvent(str(exc)) from None
        result = events_pb2.Evaluation(
            run_id=request.run_id,
            version=version,
            requested=request.min_version,
            correct=correct,
            total=total,
            worker_id=self.worker_id,
        )
        await publish(
            self.js, request.run_id, Kind.EVALUATED, result, msg_id=eval_msg_id(request.run_id, request.min_version)
        )

    async def on_control(self, control: events_pb2.Control, delivery: Delivery) -> None:
        if control.kind == events_pb2.Control.ABORT:
            self.aborted.add(control.run_id, control.aborted)
        elif control.kind in (events_pb2.Control.STOP, events_pb2.Control.COMPLETED):
            if await self._running(control.run_id):
                # the scheduler records a run's end before it says so: this one is forged or stray,
                # and dropping the run's tasks on its word would leave the run waiting for ever
                log.warning(
                    "end of a run announced, but the scheduler says it is running: ignored",
                    extra=log_fields(run=control.run_id, kind=events_pb2.Control.Kind.Name(control.kind)),
                )
                return
            self.ended_runs.add(control.run_id)
            self.aborted.forget(control.run_id)
            for engine in self.policies.forget(control.run_id):
                self._busy_retired += engine.busy_seconds
                await asyncio.to_thread(engine.close)

    async def _running(self, run_id: str) -> bool:
        try:
            return (await self.policies.specs.fetch(run_id)).progress.state == services_pb2.RUNNING
        except RunNotFound:
            return False


def _unstarted(request: GenRequest, tokenizer) -> GenResult:
    """The partial result of a sample that was aborted before it was generated: its prefix."""
    tokens = list(request.prefix_token_ids)
    return GenResult(
        tokens,
        list(request.prefix_logprobs),
        list(request.prefix_versions),
        FinishReason.ABORTED,
        tokenizer.decode(tokens, skip_special_tokens=True),
    )
