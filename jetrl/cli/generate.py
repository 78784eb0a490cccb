"""`jetrl generate RUN PROMPT...`: sample from a running run's current policy (RolloutService.Generate).

For a look at what the policy writes while it trains. The rollout worker answers with the version
it holds now. A run that has ended has no engine any more: its versions are on the trainer's
disk, and `jetrl export` takes one out for transformers or vLLM.
"""

from __future__ import annotations

import sys

import grpc
from rich.console import Console
from rich.markup import escape

from jetrl.config import Settings
from jetrl.rpc import channel
from jetrl.v1 import services_pb2, services_pb2_grpc

__all__ = ["main"]


async def main(
    settings: Settings, run_id: str, prompts: list[str], max_new_tokens: int, temperature: float, seed: int
) -> int:
    """0 with the completions printed, 2 with the reason when there is nothing to sample from."""
    try:
        async with channel(settings.scheduler_addr, settings) as ch:
            run = await services_pb2_grpc.SchedulerServiceStub(ch).GetRun(
                services_pb2.GetRunRequest(run_id=run_id), timeout=10
            )
        if run.progress.state != services_pb2.RUNNING:
            state = services_pb2.RunState.Name(run.progress.state)
            print(
                f"jetrl generate: run {run_id} is {state}, so no worker holds it; take a version out with "
                f"`jetrl export {run_id} OUT_DIR` and load it with transformers or vLLM",
                file=sys.stderr,
            )
            return 2
        async with channel(settings.rollout_addr, settings) as ch:
            reply = await services_pb2_grpc.RolloutServiceStub(ch).Generate(
                services_pb2.GenerateRequest(
                    run_id=run_id,
                    prompts=prompts,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    seed=seed,
                ),
                timeout=300,
            )
    except grpc.aio.AioRpcError as exc:
        print(f"jetrl generate: {exc.code().name}: {exc.details()} (is the stack up? jetrl status)", file=sys.stderr)
        return 2
    console = Console()
    console.print(f"[bold]{run_id}[/bold] at version {reply.version}")
    for prompt, completion in zip(prompts, reply.completions):
        console.print(f"{escape(prompt)}[bold green]{escape(completion)}[/bold green]")
    return 0
