"""What the scheduler publishes besides groups and batches: tasks, aborts, evaluation requests
and a run's end, each under its deterministic message id (a re-publish after a restart is a
duplicate JetStream drops) and, for a group's tasks, inside the group's own trace.
"""

from __future__ import annotations

from jetrl.bus import Kind, publish
from jetrl.ids import abort_msg_id, end_msg_id, eval_msg_id, task_msg_id
from jetrl.lineage.buffer import Resumed
from jetrl.states import RunState
from jetrl.telemetry import Attr, extract, tracer
from jetrl.v1 import events_pb2
from svc_scheduler.active import ActiveRun, make_tasks

__all__ = ["ENDED_CONTROL", "publish_abort", "publish_end", "publish_eval_request", "publish_task", "publish_tasks"]

ENDED_CONTROL = {
    RunState.COMPLETED: events_pb2.Control.COMPLETED,
    RunState.STOPPED: events_pb2.Control.STOP,
    RunState.FAILED: events_pb2.Control.STOP,
}


async def publish_abort(js, run_id: str, aborted: list[tuple[str, int]]) -> None:
    control = events_pb2.Control(
        run_id=run_id,
        kind=events_pb2.Control.ABORT,
        reason="batch sealed: over-provisioned groups",
        aborted=[events_pb2.TaskRef(group_id=g, attempt=a) for g, a in aborted],
    )
    await publish(js, run_id, Kind.CONTROL, control, msg_id=abort_msg_id(min(aborted)))


async def publish_tasks(js, run_id: str, tasks: list[events_pb2.Task]) -> None:
    for task in tasks:
        await publish(js, run_id, Kind.TASKS, task, msg_id=task_msg_id(task.group_id, task.attempt, task.view))


async def publish_task(js, run: ActiveRun, r: Resumed, problem: int | None = None) -> None:
    """(Re-)publish a group's current attempt inside the group's own trace."""
    tasks = make_tasks(run, r.n, r.version, problem, r.attempt, r.prefixes)
    name = "group resume" if r.attempt else "group republish"
    with tracer.start_as_current_span(name, context=extract({"traceparent": r.traceparent})) as span:
        span.set_attributes(
            {Attr.GROUP_ID: tasks[0].group_id, Attr.ATTEMPT: r.attempt, Attr.PREFIXES_DROPPED: r.dropped}
        )
        await publish_tasks(js, run.run_id, tasks)


async def publish_eval_request(js, run_id: str, version: int) -> None:
    await publish(
        js,
        run_id,
        Kind.EVALS,
        events_pb2.EvalRequest(run_id=run_id, min_version=version),
        msg_id=eval_msg_id(run_id, version),
    )


async def publish_end(js, run_id: str, state: RunState, message: str) -> None:
    kind = ENDED_CONTROL[state]
    await publish(
        js,
        run_id,
        Kind.CONTROL,
        events_pb2.Control(run_id=run_id, kind=kind, reason=message),
        msg_id=end_msg_id(run_id, kind == events_pb2.Control.COMPLETED),
    )
