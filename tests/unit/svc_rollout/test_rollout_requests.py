"""RolloutWorker (svc_rollout/worker.py) without a broker: the generation requests of a first and
of a resumed attempt, and the engine a run spec asks for (the worker on a real nats-server:
tests/integration/svc_rollout/test_rollout_worker.py)."""

import pytest

from jetrl.v1 import events_pb2 as ev
from svc_rollout.engine import TorchEngine
from svc_rollout.worker import requests_for
from tiny_rollout import TOK, make_task, tiny_engine


def test_requests_for_attempt_zero_and_for_a_resumed_attempt():
    fresh = requests_for(make_task("run1.g0", num_samples=3, max_new_tokens=8))
    assert [i for i, _ in fresh] == [0, 1, 2]
    assert [r.seed for _, r in fresh] == [3 * 1024 + i for i in range(3)]
    assert all(r.max_new_tokens == 8 and not r.prefix_token_ids for _, r in fresh)
    prefixes = [
        ev.Prefix(index=2, token_ids=[5, 6, 7], logprobs=[-1.0, -2.0, -3.0], token_versions=[0, 0, 1]),
        ev.Prefix(index=0, token_ids=list(range(9)), logprobs=[-1.0] * 9, token_versions=[1] * 9),
    ]
    resumed = requests_for(make_task("run1.g0", attempt=2, resume=prefixes, num_samples=3, max_new_tokens=8))
    assert [i for i, _ in resumed] == [2, 0]  # exactly the listed samples
    (_, two), (_, zero) = resumed
    assert two.seed == 3 * 1024 + 2 + 7919 * 2 and two.max_new_tokens == 5
    assert (list(two.prefix_token_ids), list(two.prefix_logprobs), list(two.prefix_versions)) == (
        [5, 6, 7],
        [-1.0, -2.0, -3.0],
        [0, 0, 1],
    )
    assert zero.max_new_tokens == 0  # a prefix already at the cap is never extended


@pytest.mark.parametrize("on_new_weights", ["interrupt", "finish"])
def test_the_engine_follows_the_run_spec(tmp_path, on_new_weights):
    from jetrl.config import RunSpec
    from jetrl.policy import save_policy
    from jetrl.spec_sections import ModelSpec, RolloutSpec, SimulationSpec
    from svc_rollout.policies import _build_engine
    from svc_rollout.simulated import SimulatedEngine

    path = save_policy(tiny_engine().model, TOK, tmp_path / "policy")
    rollout = RolloutSpec(on_new_weights=on_new_weights, max_new_tokens=16)
    torch_engine = _build_engine(RunSpec(model=ModelSpec(path=str(path)), rollout=rollout))
    simulated = _build_engine(
        RunSpec(model=ModelSpec(path=str(path)), rollout=rollout, simulation=SimulationSpec(max_length=16))
    )
    assert isinstance(torch_engine, TorchEngine) and isinstance(simulated, SimulatedEngine)
    for engine in (torch_engine, simulated):
        assert engine.version == 0 and engine.interrupt == (on_new_weights == "interrupt")
