"""The DeepSpeed engine's plan and config (svc_trainer/deepspeed_engine.py, deepspeed_config.py), and the run spec's
checks of its section: pure functions, no DeepSpeed needed."""

from __future__ import annotations

import json
import sys

import pytest

from jetrl.config import SpecError, parse_spec
from jetrl.spec_sections import TrainSpec
from svc_trainer.api import TrainSample
from svc_trainer.deepspeed_config import ds_config
from svc_trainer.deepspeed_engine import check_record, deepspeed_problems, plan_step


def sample(prompt: int, completion: int) -> TrainSample:
    return TrainSample([1] * prompt, [2] * completion, [0.0] * completion, 0.0)


def test_each_minibatch_is_dealt_by_tokens_with_as_many_micro_batches_on_every_rank():
    samples = [sample(4, n) for n in (9, 1, 7, 3, 2, 8, 5, 1, 6)]
    plans = plan_step(samples, minibatches=2, world=3, micro_batch_size=1)
    for slice_ in range(2):
        shares = [plan[slice_] for plan in plans]
        assert len({len(micro) for micro in shares}) == 1  # the same number of calls on every rank
        loads = [
            sum(len(s.prompt_token_ids) + len(s.completion_token_ids) for mb in micro for s in mb) for micro in shares
        ]
        assert max(loads) - min(loads) <= 9  # within one sample's tokens
    dealt = [s for plan in plans for minibatch in plan for mb in minibatch for s in mb]
    assert sorted(map(id, dealt)) == sorted(map(id, samples))  # every sample once
    # the torch engine's slices: the first minibatch holds the first five samples
    assert {id(s) for plan in plans for mb in plan[0] for s in mb} == {id(s) for s in samples[:5]}


def test_a_rank_with_no_sample_still_gets_its_micro_batch():
    plans = plan_step([sample(2, 2)], minibatches=1, world=2, micro_batch_size=4)
    assert [len(plan[0]) for plan in plans] == [1, 1]
    assert sorted(len(plan[0][0]) for plan in plans) == [0, 1]


def test_the_config_carries_the_run_spec_and_merges_a_file_under_it(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(
        json.dumps({"zero_optimization": {"reduce_bucket_size": 1000, "stage": 3}, "wall_clock_breakdown": True})
    )
    train = TrainSpec.model_validate(
        {"grad_clip": 0.5, "deepspeed": {"zero_stage": 3, "offload_params": True, "config_file": str(path)}}
    )
    config = ds_config(train, world=4)
    assert config["gradient_clipping"] == 0.5 and config["train_batch_size"] == 16 * 4
    assert config["zero_optimization"] == {
        "stage": 3,
        "reduce_bucket_size": 1000,
        "offload_optimizer": {"device": "none"},
        "offload_param": {"device": "cpu"},
    }
    assert config["wall_clock_breakdown"] is True


@pytest.mark.parametrize(
    ("file", "says"),
    [
        ({"optimizer": {"type": "Adam"}}, "'optimizer': jetrl sets it from train.lr"),
        ({"gradient_clipping": 5.0}, "'gradient_clipping': jetrl sets it from train.grad_clip"),
        ({"zero_optimization": {"stage": 1}}, "sets zero_optimization.stage = 1, but the run spec gives 2"),
        ({"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}, "offload_optimizer.device = 'cpu'"),
        ({"fp16": {"enabled": True}}, "'fp16': jetrl sets it from train.deepspeed.precision"),
        ({"bf16": {"enabled": True}}, "bf16.enabled = True, but the run spec gives False"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_a_config_file_that_fights_the_run_spec_is_refused(tmp_path, file, says):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(file))
    with pytest.raises(ValueError, match="config_file") as err:
        ds_config(TrainSpec.model_validate({"deepspeed": {"config_file": str(path)}}), world=2)
    assert says in str(err.value)


def spec_yaml(train: str, extra: str = "") -> str:
    return f"model: {{path: /m}}\ntrain: {{engine: deepspeed, {train}}}\n{extra}"


@pytest.mark.parametrize(
    ("yaml", "says"),
    [
        (spec_yaml("deepspeed: {zero_stage: 2, offload_params: true}"), "set zero_stage: 3"),
        (spec_yaml("deepspeed: {zero_stage: 4}"), "zero_stage"),
        (spec_yaml("deepspeed: {ranks: 0}"), "ranks"),
        (spec_yaml("deepspeed: {micro_batch_size: 0}"), "micro_batch_size"),
        (spec_yaml("deepspeed: {precision: fp16}"), "precision"),
        (spec_yaml("kl_coef: 0.1, kl_reference: teacher", "teacher: {}\n"), "kl_reference: initial"),
        (spec_yaml("steps: 2", "simulation: {max_length: 4}\n"), "`simulation` replaces the train engine"),
    ],
)
def test_deepspeed_options_out_of_range_are_refused_before_anything_starts(yaml, says):
    with pytest.raises(SpecError, match=says):
        parse_spec(yaml)


def test_a_trainer_without_deepspeed_refuses_the_run_saying_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # import deepspeed raises ImportError
    spec = parse_spec(spec_yaml("steps: 2"))
    [problem] = deepspeed_problems(spec, ranks=1)
    assert "DeepSpeed is not installed in the trainer" in problem and "DS_BUILD_OPS=0 pip install" in problem


def test_a_checkpoint_of_another_number_of_ranks_is_refused_saying_how_many():
    check_record({"checkpoint": "v000003", "ranks": 2, "zero_stage": 2}, world=2)
    with pytest.raises(ValueError, match="written by 2 ranks .* set JETRL_TRAINER_RANKS=2"):
        check_record({"checkpoint": "v000003", "ranks": 2, "zero_stage": 2}, world=1)
    with pytest.raises(ValueError, match="another train engine"):
        check_record({"optimizer": {}}, world=1)  # the torch engine's record
