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


def group_samples(run_id: str, n: int, size: int) -> list[tuple[ev.Sample, Delivery]]:
    """The `size` samples of group n of a run, each with the Delivery the recorder gets it with."""
    delivery = Delivery(f"jetrl.{run_id}.{Kind.ROLLOUTS}", run_id, Kind.ROLLOUTS, {}, 1, 1)
    return [(sample_event(run_id, group_id(run_id, n), i), delivery) for i in range(size)]
