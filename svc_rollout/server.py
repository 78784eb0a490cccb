"""RolloutService: held-out evaluation and ad-hoc generation outside the bus, and worker status.
Every request field is checked first (jetrl/validate_rpc.py)."""

from __future__ import annotations

import asyncio

import grpc

from jetrl import validate_rpc as valid
from jetrl.config import SpecError, parse_spec
from jetrl.policy.load import encode_prompt
from jetrl.runs import RunNotFound
from jetrl.service import Register, registering
from jetrl.v1 import services_pb2, services_pb2_grpc
from svc_rollout.api import GenRequest
from svc_rollout.checks import run_problems
from svc_rollout.policies import POLICY
from svc_rollout.worker import RolloutWorker

MAX_PROMPTS = 256  # one Generate call's prompts: they are decoded as one batch
MAX_PROMPT = 100_000  # characters of one prompt
MAX_NEW_TOKENS = 4096


class RolloutServicer(services_pb2_grpc.RolloutServiceServicer):
    def __init__(self, worker: RolloutWorker):
        self.worker = worker
        self.policies = worker.policies

    async def _engine(self, run_id: str, min_version: int, context):
        try:
            return await self.policies.at_least(run_id, min_version)
        except RunNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"version {min_version} of {run_id} was not announced in time"
            )

    async def Evaluate(self, request, context):
        valid.run_id(request.run_id)
        valid.integer(request.min_version, "min_version", 0, valid.MAX_VERSION)
        valid.integer(request.limit, "limit", 0, valid.MAX_VERSION)
        try:
            version, correct, total = await self.worker.evaluate(request.run_id, request.min_version, request.limit)
        except RunNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"version {request.min_version} of {request.run_id} was not announced in time",
            )
        return services_pb2.EvaluateResponse(
            run_id=request.run_id, version=version, correct=correct, total=total, accuracy=correct / max(total, 1)
        )

    async def Generate(self, request, context):
        valid.run_id(request.run_id)
        valid.integer(len(request.prompts), "number of prompts", 1, MAX_PROMPTS)
        for prompt in request.prompts:
            valid.text(prompt, "prompts", MAX_PROMPT)
        valid.integer(request.max_new_tokens, "max_new_tokens", 1, MAX_NEW_TOKENS)
        valid.number(request.temperature, "temperature", 0, 4)
        valid.number(request.top_p or 1.0, "top_p", 0, 1, low_open=True)  # 0, unset: 1
        if request.run_id in self.worker.ended_runs:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"run {request.run_id} has ended; `jetrl export` takes its versions out",
            )
        engine = await self._engine(request.run_id, 0, context)
        chat = (await self.policies.specs.get(request.run_id)).task.chat_template
        requests = [
            GenRequest(
                prompt_token_ids=encode_prompt(engine.tokenizer, p, chat),
                max_new_tokens=request.max_new_tokens,
                temperature=request.temperature,
                top_p=request.top_p or 1.0,
                seed=request.seed + i,
            )
            for i, p in enumerate(request.prompts)
        ]
        results = await asyncio.to_thread(engine.generate, requests)
        return services_pb2.GenerateResponse(version=engine.version, completions=[r.text for r in results])

    async def CheckRun(self, request, context):
        try:
            spec = parse_spec(valid.text(request.spec_yaml, "spec_yaml", valid.MAX_SPEC))
        except SpecError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return services_pb2.CheckRunResponse(problems=await asyncio.to_thread(run_problems, spec))

    async def GetStatus(self, request, context):
        return services_pb2.RolloutStatus(
            worker_id=self.worker.worker_id,
            loaded_versions={run: e.version for (run, role), e in self.policies.engines.items() if role == POLICY},
            samples_generated=self.worker.samples_generated,
            tokens_generated=self.worker.tokens_generated,
            busy_seconds=self.worker.busy_seconds,
            samples_aborted=self.worker.samples_aborted,
        )


def register(servicer: RolloutServicer) -> Register:
    return registering(
        services_pb2_grpc.add_RolloutServiceServicer_to_server,
        servicer,
        services_pb2.DESCRIPTOR.services_by_name["RolloutService"].full_name,
    )
