"""The built-in `verify` reward server: answer equivalence against the reference (svc_reward.verify).

Exact-number answers (arithmetic, GSM8K) are scored inline: a regex and a fraction compare. The
ones that need math-verify run in a small pool of worker processes (`MathPool`), never in the
event loop: there math-verify's own signal.alarm timeouts work (each worker runs it on its main
thread), and a worker stuck where no alarm can interrupt it (a long C-level computation) is
killed and replaced.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import grpc

from jetrl import validate_rpc as valid
from jetrl.service import Register, registering
from jetrl.v1 import reward_pb2, reward_pb2_grpc
from svc_reward import verify

NAME, VERSION = "verify", "1"
CONTRACT_VERSIONS = (1,)
MATH_TIMEOUT_S = 1  # per math-verify parse or compare; a sample makes at most three of them
# Well above 3 x MATH_TIMEOUT_S plus a worker's ~2 s start, so only a stuck worker gets here; and
# below the default Score deadline (RewardSpec.deadline_s, 10 s), so a stuck sample still gets its 0.
HANG_S = 8.0


def _init_worker() -> None:
    # math-verify logs the whole offending input at WARNING on every timeout; `detail` reports it.
    logging.getLogger("math_verify").setLevel(logging.ERROR)


class MathPool:
    """math-verify in worker processes, started on first use (arithmetic-only runs never start any).

    At most `workers` samples are in the pool at once, so a sample's wait is its own run time,
    never a queue, and `hang_s` can tell a stuck worker from a busy pool.
    """

    def __init__(self, workers: int = max(1, min(4, os.cpu_count() or 1)), hang_s: float = HANG_S):
        self.workers, self.hang_s = workers, hang_s
        self._slots = asyncio.Semaphore(workers)
        self._pool: ProcessPoolExecutor | None = None
        self._watches: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    async def score(self, reference: str, text: str) -> verify.Score:
        """Raises BrokenProcessPool when another sample's stuck worker took the pool down."""
        await self._slots.acquire()
        if self._pool is None:
            # spawn, not fork: forking a process that runs gRPC's threads is unsafe
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
            )
        call = asyncio.get_running_loop().run_in_executor(self._pool, _math_score, reference, text)
        call.add_done_callback(self._finished)
        # The hang limit runs in a task of its own: a caller that gives up first (its deadline)
        # must not leave a stuck worker holding its slot for ever.
        watch = asyncio.create_task(self._watch(self._pool, call))
        self._watches.add(watch)
        watch.add_done_callback(self._watches.discard)
        return await asyncio.shield(watch)

    async def _watch(self, pool: ProcessPoolExecutor, call: asyncio.Future) -> verify.Score:
        try:
            return await asyncio.wait_for(asyncio.shield(call), self.hang_s)
        except TimeoutError:
            self._kill(pool)
            return verify.Score(0.0, "", f"math-verify did not finish in {self.hang_s:g}s; worker restarted")

    def _finished(self, call: asyncio.Future) -> None:
        self._slots.release()  # only now: the worker is free when its call is done, not when a caller gave up
        if not call.cancelled():
            call.exception()  # retrieved, so an abandoned call's BrokenProcessPool is not logged as lost

    def _kill(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:  # not yet replaced because of another sample
            self._pool = None
        # Python 3.14 adds pool.kill_workers(); before it, only the private process table can.
        for process in list(pool._processes.values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)


def _math_score(reference: str, text: str) -> verify.Score:
    return verify.math_score(reference, text, timeout_s=MATH_TIMEOUT_S)


def contract_problem(request: reward_pb2.ScoreRequest, server: str) -> str | None:
    """What every built-in server refuses: an unknown contract version, no main view, or ids that
    are not ids (jetrl/validate_rpc.py; empty ones pass: a caller may leave them out)."""
    try:
        _check_ids(request)
    except valid.InvalidArgument as exc:
        return str(exc)
    if request.contract_version not in CONTRACT_VERSIONS:
        return (
            f"contract_version {request.contract_version} is not supported by {server}; "
            f"send one of {list(CONTRACT_VERSIONS)}"
        )
    if not request.views:
        return "no views: send the prompt and its samples as views[0] (the main view)"
    return None


def _check_ids(request: reward_pb2.ScoreRequest) -> None:
    if request.run_id:
        valid.run_id(request.run_id)
    if request.group_id:
        valid.dotted_id(request.group_id, "group_id")
    valid.integer(request.policy_version, "policy_version", 0, valid.MAX_VERSION)
    for view in request.views:
        for sample in view.samples:
            if sample.sample_id:
                valid.dotted_id(sample.sample_id, "sample_id")


def reference_problem(request: reward_pb2.ScoreRequest, name: str, version: str, what: str = "") -> str | None:
    """Why a server that scores against the reference answer cannot score this request, phrased as
    what the caller should do (`what`: what it needs the reference for); None when it can."""
    if (problem := contract_problem(request, f"{name}@{version}")) is not None:
        return problem
    if not request.reference.strip():
        return (
            f"{name} needs a reference answer{what}; set ScoreRequest.reference, or name a label-free "
            "reward server (majority, co_reward) for tasks without references"
        )
    try:
        verify.reference_answer(request.reference)
    except ValueError as exc:
        return f"bad reference: {exc}"
    return None


class Refused(Exception):
    """A Score request a built-in server does not answer, with the gRPC status a remote caller gets
    for it (`code()` and `details()`, as grpc.aio.AioRpcError has them); the reward stage of the
    same process, which calls the server directly (svc_reward.stage), gets it raised."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class VerifyServicer(reward_pb2_grpc.RewardServiceServicer):
    def __init__(self) -> None:
        self.math = MathPool()

    async def Describe(self, request, context) -> reward_pb2.DescribeResponse:
        return reward_pb2.DescribeResponse(
            name=NAME, version=VERSION, contract_versions=CONTRACT_VERSIONS, needs_reference=True
        )

    async def _score(self, reference: str, text: str) -> verify.Score:
        return verify.exact_score(reference, text) or await self.math.score(reference, text)

    async def Score(self, request, context: grpc.aio.ServicerContext) -> reward_pb2.ScoreResponse:
        try:
            return await self.score(request)
        except Refused as exc:
            await context.abort(exc.code(), exc.details())

    async def score(self, request: reward_pb2.ScoreRequest) -> reward_pb2.ScoreResponse:
        """The reply to a Score request; Refused when there is none (svc_reward.stage.LocalScorer)."""
        error = reference_problem(request, NAME, VERSION)
        if error is not None:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, error)
        samples = request.views[0].samples
        try:
            results = await asyncio.gather(*(self._score(request.reference, s.text) for s in samples))
        except BrokenProcessPool:
            raise Refused(grpc.StatusCode.UNAVAILABLE, "a math-verify worker was restarted; retry the call") from None
        return reward_pb2.ScoreResponse(
            scores=[
                reward_pb2.SampleScore(
                    sample_id=s.sample_id, reward=r.reward, extracted_answer=r.extracted, detail=r.detail
                )
                for s, r in zip(samples, results)
            ],
            server=f"{NAME}@{VERSION}",
        )


def reward_register(servicer: reward_pb2_grpc.RewardServiceServicer) -> Register:
    """The Register of any RewardService servicer (the built-in ones, a test's)."""
    return registering(
        reward_pb2_grpc.add_RewardServiceServicer_to_server,
        servicer,
        reward_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name,
    )
