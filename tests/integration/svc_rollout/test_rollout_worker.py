"""RolloutWorker (svc_rollout/worker.py) on a real nats-server: attempts, resumed prefixes, ABORT
(the requests of a task and the engine of a run spec, without a broker:
tests/unit/svc_rollout/test_rollout_requests.py)."""

import asyncio
import threading
import time

import pytest

from jetrl.bus import ROLLOUT_WORKERS, Kind, consume, follow, publish, stream_name
from jetrl.bus.publish import MSG_ID
from jetrl.policy import encode_prompt
from jetrl.v1 import events_pb2 as ev
from jetrl.v1 import services_pb2 as svc
from svc_rollout.engine import TorchEngine
from svc_rollout.policies import POLICY, Policies
from svc_rollout.server import RolloutServicer
from svc_rollout.worker import RolloutWorker
from tiny_rollout import RUN, TOK, make_task, tiny_engine


class KnownRuns:
    """Stands in for the scheduler's run specs: every run exists (the engine is put in by hand),
    in the state `state`."""

    def __init__(self, state: int = svc.STOPPED):
        self.state = state

    async def get(self, run_id):
        return None

    async def fetch(self, run_id):
        return svc.Run(run_id=run_id, progress=svc.RunProgress(state=self.state))


class HeldEngine(TorchEngine):
    """Holds generation before its `hold_at`-th decode step until the caller's should_stop says stop,
    so an ABORT sent over the bus lands at a known token."""

    def __init__(self, *args, hold_at: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.hold_at, self.holding = hold_at, threading.Event()

    def generate(self, requests, should_stop=None):
        steps = []

        def held():
            steps.append(1)
            if len(steps) == self.hold_at:
                self.holding.set()
                deadline = time.monotonic() + 30
                while not should_stop() and time.monotonic() < deadline:
                    time.sleep(0.01)
            return should_stop()

        return super().generate(requests, held)


async def running_worker(js, engine, stop, runs: KnownRuns | None = None):
    """A worker serving RUN with `engine`, consuming tasks and following control, until `stop`."""
    policies = Policies(runs or KnownRuns())
    policies.engines[(RUN, POLICY)] = engine
    worker = RolloutWorker(js, policies, "w1")
    loops = [
        asyncio.create_task(consume(js, ROLLOUT_WORKERS, worker.on_task, stop, fetch_timeout=0.2, retry_delay=0.05)),
        asyncio.create_task(follow(js, Kind.CONTROL, worker.on_control, stop, fetch_timeout=0.2)),
    ]
    return worker, loops


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not (await predicate() if asyncio.iscoroutinefunction(predicate) else predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def rollouts(js, count: int) -> list[tuple[str, ev.Rollout]]:
    """The first `count` published rollouts (one per task attempt), with their message ids."""

    async def enough():
        return (await js.stream_info(stream_name(Kind.ROLLOUTS))).state.messages >= count

    await until(enough)
    got = []
    for seq in range(1, count + 1):
        msg = await js.get_msg(stream_name(Kind.ROLLOUTS), seq)
        got.append((msg.headers[MSG_ID], ev.Rollout.FromString(msg.data)))
    return got


def abort(*refs):
    return ev.Control(
        run_id=RUN,
        kind=ev.Control.ABORT,
        reason="batch sealed",
        aborted=[ev.TaskRef(group_id=g, attempt=a) for g, a in refs],
    )


async def test_a_task_aborted_before_it_is_taken_hands_back_its_prefixes(js):
    stop = asyncio.Event()
    worker, loops = await running_worker(js, tiny_engine(), stop)
    prefixes = [
        ev.Prefix(index=1, token_ids=encode_prompt(TOK, "46")[-2:], logprobs=[-0.5, -1.25], token_versions=[0, 1]),
        ev.Prefix(index=3, token_ids=encode_prompt(TOK, "5")[-1:], logprobs=[-2.0], token_versions=[1]),
    ]
    try:
        await publish(js, RUN, Kind.CONTROL, abort(("run1.g0", 1)), msg_id="abort-1")
        await until(lambda: (RUN, "run1.g0", 1) in worker.aborted)
        await publish(js, RUN, Kind.TASKS, make_task("run1.g0", 1, prefixes), msg_id="run1.g0.a1")
        [partials] = await rollouts(js, 1)
        # a later attempt of the same group is not aborted: it is generated, continuing the prefixes
        await publish(js, RUN, Kind.TASKS, make_task("run1.g0", 2, prefixes), msg_id="run1.g0.a2")
        finished = (await rollouts(js, 2))[1]
        await until(lambda: worker.samples_generated == 2)
    finally:
        stop.set()
        await asyncio.gather(*loops)
    assert partials[0] == "run1.g0.a1" and finished[0] == "run1.g0.a2"  # one id per attempt
    for s, p in zip(partials[1].samples, prefixes, strict=True):
        assert s.sample_id == f"run1.g0.{p.index}"
        assert (s.index, s.attempt, s.prefix_len, s.finish_reason) == (p.index, 1, len(p.token_ids), "aborted")
        assert (s.completion_token_ids, s.logprobs, s.token_versions) == (p.token_ids, p.logprobs, p.token_versions)
        assert s.text == TOK.decode(list(p.token_ids), skip_special_tokens=True)
    for s, p in zip(finished[1].samples, prefixes, strict=True):
        assert s.sample_id == f"run1.g0.{p.index}"
        assert (s.attempt, s.prefix_len) == (2, len(p.token_ids)) and s.finish_reason in ("eos", "length")
        assert s.completion_token_ids[: len(p.token_ids)] == p.token_ids
        assert s.logprobs[: len(p.logprobs)] == p.logprobs and s.token_versions[: len(p.token_ids)] == p.token_versions
        assert len(s.completion_token_ids) <= 8  # the cap is on the whole completion
    assert worker.samples_aborted == 2
    assert worker.tokens_generated == sum(len(s.completion_token_ids) - s.prefix_len for s in finished[1].samples)
    assert (await js.stream_info(stream_name(Kind.TASKS))).state.messages == 0  # both tasks acked


async def test_an_abort_mid_generation_publishes_partial_samples_at_the_next_token(js):
    stop = asyncio.Event()
    engine = tiny_engine(HeldEngine, hold_at=4)  # the abort lands before the 4th decode step
    worker, loops = await running_worker(js, engine, stop)
    try:
        await publish(
            js,
            RUN,
            Kind.TASKS,
            make_task("run1.g5", num_samples=3, max_new_tokens=20, temperature=0.0),
            msg_id="run1.g5",
        )
        assert await asyncio.to_thread(engine.holding.wait, 30)
        await publish(js, RUN, Kind.CONTROL, abort(("run1.g5", 0)), msg_id="abort-g5")
        [(msg_id, rollout)] = await rollouts(js, 1)
        status = await RolloutServicer(worker).GetStatus(ev.Control(), None)
        busy = worker.busy_seconds
        await publish(js, RUN, Kind.CONTROL, ev.Control(run_id=RUN, kind=ev.Control.STOP), msg_id="stop")
        await until(lambda: RUN not in worker.policies.engines)
    finally:
        stop.set()
        await asyncio.gather(*loops)
    assert msg_id == "run1.g5.a0" and len(rollout.samples) == 3
    for i, s in enumerate(rollout.samples):
        assert (s.index, s.attempt, s.prefix_len, s.finish_reason) == (i, 0, 0, "aborted")
        assert len(s.completion_token_ids) == len(s.logprobs) == 3 and list(s.token_versions) == [0, 0, 0]
    assert (status.samples_aborted, status.samples_generated, status.tokens_generated) == (3, 0, 9)
    assert status.busy_seconds == pytest.approx(busy) and busy > 0
    assert worker.busy_seconds == busy  # the ended run's engine is gone, its busy time is kept
    assert (RUN, "run1.g5", 0) not in worker.aborted  # forgotten with the run


async def test_an_end_of_run_the_scheduler_does_not_confirm_is_ignored(js):
    """A forged COMPLETED used to make every worker drop the run's tasks: the run waited for ever."""
    stop = asyncio.Event()
    worker, loops = await running_worker(js, tiny_engine(), stop, KnownRuns(svc.RUNNING))
    try:
        forged = ev.Control(run_id=RUN, kind=ev.Control.COMPLETED, reason="forged")
        await publish(js, RUN, Kind.CONTROL, forged, msg_id="forged-end")
        await publish(js, RUN, Kind.TASKS, make_task("run1.g0", num_samples=2), msg_id="run1.g0")
        [(_, rollout)] = await rollouts(js, 1)
        assert len(rollout.samples) == 2  # the task was still generated
    finally:
        stop.set()
        await asyncio.gather(*loops)
    assert RUN not in worker.ended_runs and (RUN, POLICY) in worker.policies.engines


async def test_a_task_with_nothing_left_to_generate_is_done_without_a_rollout(js):
    """A group aborted when every sample had already finished resumes with nothing to generate.
    Its task publishes nothing and is acked: an empty Rollout is refused by the bus, and the task
    failed for good and failed the run (sync-april-r1 in the generation-bound bench)."""
    stop = asyncio.Event()
    worker, loops = await running_worker(js, tiny_engine(), stop)
    try:
        await publish(js, RUN, Kind.TASKS, make_task("run1.g7", 1, resume=[]), msg_id="run1.g7.r1")
        await publish(js, RUN, Kind.TASKS, make_task("run1.g8", num_samples=2), msg_id="run1.g8")
        [(msg_id, rollout)] = await rollouts(js, 1)  # the next task's, not an empty one

        async def both_acked():  # a dead-lettered task is acked too
            return await messages(js, Kind.TASKS) == 0

        await until(both_acked)
    finally:
        stop.set()
        await asyncio.gather(*loops)
    assert msg_id == "run1.g8.a0" and len(rollout.samples) == 2
    assert await messages(js, Kind.DLQ) == 0
    assert (worker.samples_generated, worker.samples_aborted) == (2, 0)


async def messages(js, kind: Kind) -> int:
    return (await js.stream_info(stream_name(kind))).state.messages
