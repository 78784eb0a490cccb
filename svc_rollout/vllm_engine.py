"""vLLM generation engine: vLLM's asynchronous engine inside the rollout worker, behind jetrl's
GenerationEngine seam (svc_rollout/api.py), with the torch engine's promises kept.

- Token in, token out: a request's prompt and prefix go in as token ids (never re-tokenised);
  each new token comes back with its behaviour log-prob as sampled (vLLM's `processed_logprobs`:
  after temperature and top-p, as the torch engine records them) and the version that made it.
- Versions: a request runs as one or more *segments*, each wholly on one version. A new version
  (`interrupt`) pauses vLLM, which ends every segment in flight, drops the KV and prefix caches
  (computed by the old weights), loads the file into the live model in place
  (svc_rollout/vllm_worker.py), and resumes; every request then continues from its tokens so far
  as a new segment on the new weights. In `finish` mode a load waits until no call is in flight.
- APRIL: `should_stop` is asked on every step's output (and every 10 ms while a request waits);
  when true the request is aborted in vLLM and keeps exactly the tokens received so far.

The engine owns an event loop on a thread of its own (vLLM's AsyncLLM is asyncio), so the
worker's threads call it synchronously like the torch engine.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from safetensors import safe_open
from transformers import PreTrainedTokenizerBase
from vllm import SamplingParams
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.inputs import TokensPrompt
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM

from jetrl.spec_sections import VllmSpec
from jetrl.states import FinishReason
from jetrl.tasks import Problem
from jetrl.weights import version_files
from svc_rollout.api import GenRequest, GenResult
from svc_rollout.gate import CallGate
from svc_rollout.results import greedy_evaluation, never_stop, set_texts, start_results

__all__ = ["VllmEngine"]

T = TypeVar("T")
_POLL_S = 0.01  # how often a request waiting for its next token asks should_stop


class VllmEngine:
    """Generation on vLLM; `version` is the policy version of the weights it generates with now."""

    def __init__(
        self,
        model_dir: Path,
        tokenizer: PreTrainedTokenizerBase,
        settings: VllmSpec,
        *,
        seed: int = 0,
        version: int = 0,
        interrupt: bool = True,
    ):
        self.tokenizer = tokenizer
        self.version = version
        self.interrupt = interrupt
        self.eos_id = tokenizer.eos_token_id
        self._gate = CallGate(interrupt)
        self._ids = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-engine", daemon=True)
        self._thread.start()
        self._weights = asyncio.Lock()  # held by a load, and by a segment while it enters the engine
        self._layout = tensor_layout(sorted(Path(model_dir).glob("*.safetensors")))
        args = AsyncEngineArgs(
            model=str(model_dir),
            tokenizer=str(model_dir),
            dtype=settings.dtype,
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=settings.memory_fraction,
            tensor_parallel_size=settings.tensor_parallel_size,
            enforce_eager=settings.enforce_eager,
            max_num_seqs=settings.max_num_seqs,
            seed=seed,
            logprobs_mode="processed_logprobs",
            enable_prefix_caching=True,
            worker_extension_cls="svc_rollout.vllm_worker.WeightLoader",
        )
        try:
            self._llm = self._run(_start(args))
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def busy_seconds(self) -> float:
        """Wall time during which at least one generate call was decoding (not a sum over calls)."""
        return self._gate.busy_seconds

    def load_weights(self, path: Path, version: int) -> None:
        """Load a safetensors file into the live model as `version`: at once, ending the segments
        in flight (they continue on the new weights), or once no call is in flight (finish).
        Raises ValueError, the engine untouched, when the file's tensors are not the model's."""
        found = tensor_layout(version_files(path))
        if found != self._layout:
            missing, unexpected = sorted(self._layout.keys() - found.keys()), sorted(found.keys() - self._layout.keys())
            wrong_shape = sorted(n for n in found.keys() & self._layout.keys() if found[n] != self._layout[n])
            raise ValueError(
                f"{path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                f"wrong shape {wrong_shape[:5]}"
            )
        with self._gate.load():
            self._run(self._load(path, version))

    async def _load(self, path: Path, version: int) -> None:
        async with self._weights:
            # ends every segment in flight and drops the caches the old weights computed
            await self._llm.pause_generation(mode="abort", clear_cache=True)
            try:
                await self._llm.collective_rpc("jetrl_load_weights", args=(str(path),))
                self.version = version
            finally:
                await self._llm.resume_generation()

    def generate(
        self, requests: Sequence[GenRequest], should_stop: Callable[[], bool] | None = None
    ) -> list[GenResult]:
        """Complete every request (vLLM batches them with every other call's); a request stops on
        EOS, on its max_new_tokens, or ("aborted") once `should_stop()` returns true."""
        results, todo = start_results(requests, self.eos_id)
        if todo:
            stop = should_stop or never_stop
            with self._gate.call():
                self._run(self._complete_all([requests[i] for i in todo], [results[i] for i in todo], stop))
        set_texts(results, self.tokenizer)
        return results

    async def _complete_all(
        self, requests: Sequence[GenRequest], results: Sequence[GenResult], should_stop: Callable[[], bool]
    ) -> None:
        await asyncio.gather(*(self._complete(req, res, should_stop) for req, res in zip(requests, results)))

    async def _complete(self, req: GenRequest, res: GenResult, should_stop: Callable[[], bool]) -> None:
        """Segments until the request ends; a segment ended by a weight load is followed by
        another from the tokens so far."""
        start = len(res.token_ids)
        while (remaining := req.max_new_tokens - (len(res.token_ids) - start)) > 0:
            if should_stop():
                res.finish_reason = FinishReason.ABORTED
                return
            reason = await self._segment(req, res, remaining, should_stop)
            if reason is not None:
                res.finish_reason = reason
                return
        res.finish_reason = FinishReason.LENGTH

    async def _segment(
        self, req: GenRequest, res: GenResult, remaining: int, should_stop: Callable[[], bool]
    ) -> FinishReason | None:
        """One vLLM request on one version; None when a weight load ended it mid-way."""
        params = SamplingParams(
            max_tokens=remaining,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed + len(res.token_ids),  # a resumed segment draws afresh
            logprobs=0,  # the sampled token's own log-prob only
            stop_token_ids=[self.eos_id],
            ignore_eos=True,  # stop on the tokenizer's EOS only, as the torch engine does
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )
        request_id = f"jetrl-{next(self._ids)}"
        async with self._weights:  # no load between reading the version and the request entering
            version = self.version
            prompt = TokensPrompt(prompt_token_ids=[*req.prompt_token_ids, *res.token_ids])
            outputs = await self._llm.add_request(request_id, prompt, params)
        try:
            while True:
                out = outputs.get_nowait() or await _next_or_none(outputs, should_stop)
                if out is None:
                    await self._llm.abort(request_id)
                    return FinishReason.ABORTED
                completion = out.outputs[0]
                for tok, logprobs in zip(completion.token_ids, completion.logprobs or ()):
                    res.token_ids.append(tok)
                    res.logprobs.append(logprobs[tok].logprob)
                    res.versions.append(version)
                if out.finished:
                    if res.token_ids[-1:] == [self.eos_id]:
                        return FinishReason.EOS
                    return None if completion.finish_reason == "abort" else FinishReason.LENGTH
                if should_stop():
                    await self._llm.abort(request_id)
                    return FinishReason.ABORTED
        finally:
            outputs.close()

    def evaluate(
        self, problems: Sequence[Problem], *, max_new_tokens: int = 8, batch_size: int = 256, chat: bool = False
    ) -> tuple[int, int]:
        """Greedy held-out score: (number correct, number of problems)."""
        return greedy_evaluation(
            self.generate, self.tokenizer, problems, max_new_tokens=max_new_tokens, batch_size=batch_size, chat=chat
        )

    def close(self) -> None:
        """Shut vLLM down (its processes and memory) and end the engine's thread."""
        self._run(_shutdown(self._llm))  # on its own loop, where its output handler runs
        self._stop_loop()
        del self._llm  # its finaliser would shut it down again at interpreter exit, half torn down

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)


def tensor_layout(files: Sequence[Path]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in safetensors files (headers only: nothing is loaded)."""
    layout: dict[str, tuple[int, ...]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            layout.update((name, tuple(f.get_slice(name).get_shape())) for name in f.keys())
    return layout


async def _start(args: AsyncEngineArgs) -> AsyncLLM:
    # AsyncLLM starts its output handler on the running loop: build it on the engine's own
    return AsyncLLM.from_engine_args(args)


async def _shutdown(llm: AsyncLLM) -> None:
    llm.shutdown()


async def _next_or_none(outputs: Any, should_stop: Callable[[], bool]) -> Any:
    """The request's next output, or None as soon as `should_stop()` is true while waiting."""
    while not should_stop():
        try:
            return await asyncio.wait_for(outputs.get(), _POLL_S)
        except TimeoutError:
            continue
    return None
