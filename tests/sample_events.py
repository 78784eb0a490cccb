"""Sample events for the tests that write or validate them: the ids follow from the group and the
index, the rest is a finished two-token completion unless a test says otherwise: "2" then EOS in
the character tokenizer, with that text, so the recorder's check of tokens against text passes."""

from jetrl.bus import Delivery, Kind
from jetrl.ids import group_id
from jetrl.v1 import events_pb2 as ev

DEFAULTS = dict(
    prompt_token_ids=[5, 6],
    completion_token_ids=[7, 2],
    text="2",
    logprobs=[-0.5, -0.25],
    token_versions=[0, 0],
    finish_reason="eos",
    worker_id="w1",
)


def sample_event(run_id: str, group_id: str, index: int, **fields) -> ev.Sample:
    """Sample `index` of `group_id`; `fields` replace the defaults."""
    ids = dict(run_id=run_id, group_id=group_id, sample_id=f"{group_id}.{index}", index=index)
    return ev.Sample(**(DEFAULTS | ids | fields))


def rollout_of(*samples: ev.Sample) -> ev.Rollout:
    """The Rollout a task attempt that generated `samples` publishes (they share run, group, attempt, view)."""
    first = samples[0]
    return ev.Rollout(
        run_id=first.run_id, group_id=first.group_id, attempt=first.attempt, view=first.view, samples=samples
    )


def rollout_delivery(run_id: str) -> Delivery:
    return Delivery(f"jetrl.{run_id}.{Kind.ROLLOUTS}", run_id, Kind.ROLLOUTS, {}, 1, 1)


def group_samples(run_id: str, n: int, size: int) -> list[ev.Sample]:
    """The `size` samples of group n of a run."""
    return [sample_event(run_id, group_id(run_id, n), i) for i in range(size)]


def group_rollout(run_id: str, n: int, size: int) -> list[tuple[ev.Rollout, Delivery]]:
    """Group n's first attempt as the recorder gets it: one Rollout of its `size` samples, with its Delivery."""
    return [(rollout_of(*group_samples(run_id, n, size)), rollout_delivery(run_id))]
