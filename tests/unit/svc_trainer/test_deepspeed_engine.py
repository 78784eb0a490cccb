"""DeepSpeed ZeRO on CPU ranks (svc_trainer/deepspeed_engine.py, deepspeed_rank.py, ranks.py): the
same update as the torch engine, checkpoints that resume exactly, a dead rank that fails the group.

The `deepspeed` marker: needs DeepSpeed (`DS_BUILD_OPS=0 pip install '.[deepspeed]'`); its first
start JIT-compiles a communication op (~35 s, cached in TORCH_EXTENSIONS_DIR).
"""

from __future__ import annotations

import copy
import os
import signal
import time

import pytest
import torch

from jetrl.config import RunSpec
from jetrl.policy.load import load_policy, read_state_file
from svc_trainer.api import TrainSample
from svc_trainer.engine import TorchTrainEngine
from svc_trainer.ranks import RankError, RanksFailed
from tiny_models import TOK, spread_model

pytestmark = [pytest.mark.deepspeed, pytest.mark.timeout(600)]
pytest.importorskip("deepspeed")

from svc_trainer.deepspeed_engine import DeepSpeedTrainEngine  # noqa: E402

# where CUDA is seen each rank takes a GPU of its own: NCCL puts no two ranks on one
two_ranks = pytest.mark.skipif(
    torch.cuda.is_available() and torch.cuda.device_count() < 2,
    reason=f"two ranks need two GPUs; {torch.cuda.device_count()} here",
)

# float32 on both sides; DeepSpeed reduces gradients in another order than one process sums them
WEIGHT_ATOL = 2e-5
METRIC_RTOL = 1e-3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds-model")
    spread_model(seed=3).save_pretrained(out)
    TOK.save_pretrained(out)
    return out


def spec(model_dir, minibatches: int = 2, train: dict | None = None, **deepspeed) -> RunSpec:
    return RunSpec.model_validate(
        {
            "model": {"path": str(model_dir)},
            "rollout": {"temperature": 1.0, "max_new_tokens": 8},
            # two minibatches: the second is clipped against the proximal policy of before the first
            "train": {
                "engine": "deepspeed",
                "lr": 0.01,
                "minibatches": minibatches,
                "deepspeed": deepspeed,
                **(train or {}),
            },
        }
    )


def batches(n: int = 3, size: int = 6, untrainable: int = -1) -> list[list[TrainSample]]:
    """Samples of different lengths with behaviour log-probs off the policy (so w != 1), mixed-sign
    advantages, and a stale-masked token here and there; batch `untrainable` has none to train."""
    g = torch.Generator().manual_seed(7)
    out = []
    for b in range(n):
        batch = []
        for i in range(size):
            p_len, c_len = 2 + (i * 3 + b) % 5, 1 + (i * 5 + b) % 7
            completion = torch.randint(3, 40, (c_len,), generator=g).tolist()
            batch.append(
                TrainSample(
                    prompt_token_ids=torch.randint(3, 40, (p_len,), generator=g).tolist(),
                    completion_token_ids=completion,
                    logprobs=(-3.5 + 0.5 * torch.rand(c_len, generator=g)).tolist(),
                    advantage=float(torch.randn((), generator=g)),
                    trainable=[(i + t) % 5 != 4 and b != untrainable for t in range(c_len)],
                    fresh=[t % 2 == 0 for t in range(c_len)],
                )
            )
        out.append(batch)
    return out


RATES = [0.01, 0.02, 0.005, 0.01]  # one per batch: the rate of each version reaches every rank


def torch_run(model_dir, run: RunSpec, data):
    from svc_trainer.kl import kl_reference

    model, _ = load_policy(model_dir)
    engine = TorchTrainEngine(model, run.train, temperature=1.0, max_new_tokens=8, reference=kl_reference(run, None))
    return [engine.train_step(b, lr) for b, lr in zip(data, RATES)], engine.model.state_dict()


def ds_weights(engine, path):
    written = engine.save_weights(path, None, 0)
    model, _ = load_policy(engine.spec.model.path)
    return read_state_file(model, written)


def ds_run(run: RunSpec, data, ranks: int, tmp_path):
    """DeepSpeed's metrics for each batch of `data` (at RATES) and its weights after the last."""
    engine = DeepSpeedTrainEngine(run, None, tmp_path / "ck", ranks=ranks, timeout_s=120)
    try:
        metrics = [engine.train_step(b, lr) for b, lr in zip(data, RATES)]
        return metrics, ds_weights(engine, tmp_path / f"v{len(data)}.safetensors")
    finally:
        engine.close()


@two_ranks
@pytest.mark.parametrize(
    ("stage", "minibatches", "micro_batch_size", "train"),
    [
        # a no-grad proximal pass, then two optimizer steps over 3 samples each: ranks get 2 and 1,
        # so with micro-batches of 1 one rank accumulates two and the other runs a zero-weight stand-in
        (2, 2, 1, {}),
        # ZeRO-3 and the one-pass path (the proximal log-probs are the forward's, detached) are
        # `slow`: each case starts two ranks, and .ci/run's budget is tight (bash scripts/test.sh -m deepspeed)
        pytest.param(3, 2, 1, {}, marks=pytest.mark.slow),
        pytest.param(2, 1, 16, {}, marks=pytest.mark.slow),
        # Dr. GRPO's constant normaliser and the KL anchor to the starting model, over ranks
        (2, 2, 2, {"loss_agg": "constant", "kl_coef": 0.5}),
    ],
)
def test_two_ranks_train_exactly_like_the_torch_engine(
    model_dir, tmp_path, stage, minibatches, micro_batch_size, train
):
    run = spec(model_dir, minibatches, train, ranks=2, zero_stage=stage, micro_batch_size=micro_batch_size)
    data = batches(4, untrainable=2)  # the third batch keeps no token: no step, weights unchanged
    expected_metrics, expected = torch_run(model_dir, run, data)
    got_metrics, got = ds_run(run, data, 2, tmp_path)
    for want, have in zip(expected_metrics, got_metrics):
        assert want.keys() == have.keys()
        for key in ("loss", "clip_fraction", "grad_norm", "mean_w", "masked_fraction", "logprob_gap_mean", "kl"):
            if key not in want:
                continue
            assert have[key] == pytest.approx(want[key], rel=METRIC_RTOL, abs=1e-6), key
        assert have["tokens"] == want["tokens"]
    if minibatches > 1:
        assert any(m["clip_fraction"] > 0 for m in got_metrics)  # the clip did bind
    assert got_metrics[2]["grad_norm"] == 0.0 and got_metrics[2]["tokens"] == 0
    for name, tensor in got.items():
        assert torch.allclose(tensor, expected[name], atol=WEIGHT_ATOL), name


@two_ranks
def test_a_checkpoint_resumes_the_run_exactly(model_dir, tmp_path):
    run = spec(model_dir, ranks=2, zero_stage=2, micro_batch_size=4)
    data = batches()
    first = DeepSpeedTrainEngine(run, None, tmp_path / "ck", ranks=2, timeout_s=120)
    try:
        first.train_step(data[0])
        exact = first.save_weights(tmp_path / "v1.safetensors", None, 0)
        record = first.save_state(1)
        for b in data[1:]:  # the run as it would have gone on without a restart
            first.train_step(b)
        want = ds_weights(first, tmp_path / "straight.safetensors")
    finally:
        first.close()
    assert record == {"checkpoint": "v000001", "ranks": 2, "zero_stage": 2}
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["v000001"]
    resumed = DeepSpeedTrainEngine(run, exact, tmp_path / "ck", ranks=2, timeout_s=120)
    try:
        resumed.load_state(record)  # AdamW's moments too: without them the next steps differ
        for b in data[1:]:
            resumed.train_step(b)
        got = ds_weights(resumed, tmp_path / "resumed.safetensors")
    finally:
        resumed.close()
    for name, tensor in got.items():
        assert torch.allclose(tensor, want[name], atol=WEIGHT_ATOL), name


@two_ranks
def test_a_rank_that_raises_fails_its_command_as_a_fault_not_as_the_trainer_s_infrastructure(model_dir, tmp_path):
    failures = []
    engine = DeepSpeedTrainEngine(
        spec(model_dir, ranks=2), None, tmp_path, ranks=2, timeout_s=120, on_failure=failures.append
    )
    try:
        with pytest.raises(RankError, match="(?s)rank 0 failed in 'step'.*AttributeError"):
            # what no plan makes, for rank 0 only: rank 1 waits in the step's first collective
            engine.group.call("step", [1], 0.01, each=[[["not a sample"]], [[]]])
        assert not any(p.is_alive() for p in engine.group.procs) and not failures
    finally:
        engine.close()


@two_ranks
def test_a_rank_that_dies_fails_the_group_at_once_and_says_which(model_dir, tmp_path):
    failures = []
    run = spec(model_dir, ranks=2)
    engine = DeepSpeedTrainEngine(run, None, tmp_path, ranks=2, timeout_s=120, on_failure=failures.append)
    try:
        os.kill(engine.group.pids[1], signal.SIGKILL)  # a rank we started
        deadline = time.monotonic() + 30
        while not failures and time.monotonic() < deadline:
            time.sleep(0.1)
        assert failures and "rank 1 exited (code -9)" in failures[0]  # killed: says how
        assert not any(p.is_alive() for p in engine.group.procs)  # the other rank is ended too
        with pytest.raises(RanksFailed, match="rank 1"):
            engine.train_step(copy.deepcopy(batches(1)[0]))
    finally:
        engine.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is false)")
def test_one_rank_on_the_gpu_trains_like_the_torch_engine_on_the_cpu(model_dir, tmp_path):
    """The rank's reductions of its metrics run on NCCL, which takes only GPU tensors."""
    run = spec(model_dir, 2, {"kl_coef": 0.5}, ranks=1, zero_stage=2, micro_batch_size=2)
    data = batches(4, untrainable=2)
    expected_metrics, expected = torch_run(model_dir, run, data)
    got_metrics, got = ds_run(run, data, 1, tmp_path)
    for want, have in zip(expected_metrics, got_metrics):
        assert have["tokens"] == want["tokens"]
        for key in ("loss", "grad_norm", "logprob_gap_mean", "kl"):
            assert have[key] == pytest.approx(want[key], rel=1e-3, abs=1e-5), key
    for name, tensor in got.items():
        assert torch.allclose(tensor, expected[name], atol=1e-4), name
