"""The trainer's weight files (svc_trainer/worker.py, checkpoint.py): written tensor by tensor in
the starting model's dtype, announced with the file's own checksum, pruned by the retention
rule, and a restart resuming from the exact float32 weights when it published bf16."""

import hashlib
from types import SimpleNamespace

import pytest
import torch
from nats.js.api import PubAck
from pydantic import ValidationError
from safetensors import safe_open

from jetrl.config import RunSpec
from jetrl.digest import batch_digest
from jetrl.policy import make_char_tokenizer, make_tiny_model, save_policy
from jetrl.v1 import events_pb2 as ev
from jetrl.weights import INDEX_SUFFIX, file_sha256, version_files
from svc_trainer.api import TrainSample
from svc_trainer.checkpoint import master_path, prune_versions, published, weights_path
from svc_trainer.worker import Trainer

TOK = make_char_tokenizer()


class Bus:
    """Takes what the trainer publishes (weights announcements) and acks it."""

    def __init__(self):
        self.sent = []

    async def publish(self, subject, payload, headers=None):
        self.sent.append(ev.WeightsAnnouncement.FromString(payload))
        return PubAck(stream="s", seq=len(self.sent))


class Specs:
    """Stands in for the scheduler: the run's spec, and the digests of the batches it sealed."""

    def __init__(self, spec):
        self.spec = spec
        self.sealed: dict[str, str] = {}

    async def get(self, run_id):
        return self.spec

    async def batch_digest(self, run_id, batch_id):
        return self.sealed[batch_id]


def model_dir(tmp_path, dtype):
    model = make_tiny_model(TOK, hidden_size=32, heads=2, layers=1, intermediate_size=64)
    return save_policy(model.to(dtype), TOK, tmp_path / f"model-{dtype}")


def run_spec(path, **train) -> RunSpec:
    return RunSpec.model_validate({"name": "w", "model": {"path": str(path)}, "train": {"lr": 0.01, **train}})


async def train(trainer, run_id, steps):
    """`steps` versions through the real commit path, each on one sample."""
    rt = await trainer.run(run_id)
    spec = await trainer.specs.get(run_id)
    for step in range(steps):
        sample = TrainSample([1, 5, 6], [7, 8], [-1.0, -1.0], 1.0)
        metrics = rt.engine.train_step([sample])
        await trainer._commit(SimpleNamespace(run_id=run_id, batch_id=f"b{step}"), rt, [], metrics, spec)
    return rt


def dtypes(path):
    with safe_open(str(path), framework="pt") as f:
        return {f.get_slice(n).get_dtype() for n in f.keys()}


async def test_a_float32_model_publishes_float32_with_the_files_checksum(tmp_path):
    bus = Bus()
    trainer = Trainer(bus, Specs(run_spec(model_dir(tmp_path, torch.float32))), tmp_path / "data", "")
    await train(trainer, "r", 2)
    ann = bus.sent[-1]
    path = weights_path(tmp_path / "data", "r", 2)
    assert ann.uri == path.as_uri() and ann.size_bytes == path.stat().st_size
    assert ann.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert dtypes(path) == {"F32"} and not master_path(tmp_path / "data", "r", 2).exists()


async def test_a_bf16_model_publishes_bf16_and_a_restart_resumes_from_the_exact_weights(tmp_path):
    data, spec = tmp_path / "data", run_spec(model_dir(tmp_path, torch.bfloat16))
    rt = await train(Trainer(Bus(), Specs(spec), data, ""), "r", 3)
    assert dtypes(weights_path(data, "r", 3)) == {"BF16"}  # half the bytes on the way to the engines
    assert dtypes(master_path(data, "r", 3)) == {"F32"}
    assert not master_path(data, "r", 2).exists()  # only the saved version's exact copy is kept
    restarted = await Trainer(Bus(), Specs(spec), data, "").run("r")
    trained, resumed = rt.engine.model.state_dict(), restarted.engine.model.state_dict()
    assert restarted.state.version == 3 and all(torch.equal(trained[n], resumed[n]) for n in trained)


async def test_old_version_files_are_pruned_by_the_retention_rule(tmp_path):
    data = tmp_path / "data"
    spec = run_spec(model_dir(tmp_path, torch.float32), keep_last_versions=2, keep_every_versions=3)
    await train(Trainer(Bus(), Specs(spec), data, ""), "r", 7)
    kept = sorted(int(p.stem[1:]) for p in weights_path(data, "r", 1).parent.glob("v*.safetensors"))
    assert kept == [3, 6, 7]


def test_prune_versions_keeps_the_newest_k_and_every_nth(tmp_path):
    for v in range(1, 11):
        (tmp_path / f"v{v:06d}.safetensors").write_bytes(b"")
    assert prune_versions(tmp_path, 10, 0, 4) == []  # 0: keep every version
    assert prune_versions(tmp_path, 10, 3, 4) == [1, 2, 3, 5, 6, 7]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"v{v:06d}.safetensors" for v in (4, 8, 9, 10)]


def test_keeping_only_the_newest_version_is_refused():
    with pytest.raises(ValidationError, match="at least 2"):
        run_spec("m", keep_last_versions=1)


async def test_a_version_over_the_shard_size_is_announced_by_its_index_and_resumed_and_pruned_whole(tmp_path):
    data = tmp_path / "data"
    big = save_policy(make_tiny_model(TOK), TOK, tmp_path / "big")  # the demo's shape: 1.8 MB in float32
    spec = run_spec(big, weights_shard_mb=1, keep_last_versions=2)
    bus = Bus()
    rt = await train(Trainer(bus, Specs(spec), data, ""), "r", 3)
    index = published(weights_path(data, "r", 3))
    assert index.name.endswith(INDEX_SUFFIX) and len(version_files(index)) == 2
    ann = bus.sent[-1]
    assert ann.uri == index.as_uri() and ann.sha256 == file_sha256(index)
    assert ann.size_bytes == sum(f.stat().st_size for f in version_files(index))
    restarted = await Trainer(Bus(), Specs(spec), data, "").run("r")
    trained, resumed = rt.engine.model.state_dict(), restarted.engine.model.state_dict()
    assert all(torch.equal(trained[n], resumed[n]) for n in trained)
    # version 1 went whole (index and shards); 2 and 3 stay
    assert sorted({p.name[:7] for p in weights_path(data, "r", 1).parent.iterdir()}) == ["v000002", "v000003"]


class _Planted:
    """A pickle that runs code when loaded (here: makes a directory)."""

    def __init__(self, where):
        self.where = str(where)

    def __reduce__(self):
        import os

        return (os.makedirs, (self.where,))


def test_a_planted_trainer_state_is_refused_without_running_its_code(tmp_path):
    import pickle

    from svc_trainer.checkpoint import load_state, run_dir

    planted = run_dir(tmp_path, "r") / "trainer.pt"
    planted.parent.mkdir(parents=True)
    torch.save({"version": _Planted(tmp_path / "ran")}, planted)
    with pytest.raises(pickle.UnpicklingError):
        load_state(tmp_path, "r")
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # resumed from the published file / master copy
async def test_a_trainer_will_not_resume_from_a_version_file_changed_on_disk(tmp_path, dtype):
    from svc_trainer.worker import TamperedState

    data, spec = tmp_path / "data", run_spec(model_dir(tmp_path, dtype))
    await train(Trainer(Bus(), Specs(spec), data, ""), "r", 2)
    exact = master_path(data, "r", 2) if dtype == torch.bfloat16 else weights_path(data, "r", 2)
    raw = bytearray(exact.read_bytes())
    raw[-4:] = b"\0\0\0\0"  # the last weight's bytes, zeroed: still a valid safetensors file
    exact.write_bytes(bytes(raw))
    with pytest.raises(TamperedState, match="v2.*does not hold the weights the trainer saved"):
        await Trainer(Bus(), Specs(spec), data, "").run("r")


async def test_a_step_that_fails_after_training_leaves_no_trained_weights_in_memory(tmp_path):
    """The batch is retried from the saved version: the weights it moved (and the state's counters)
    are not kept, or the retry would train it twice."""
    data, spec = tmp_path / "data", run_spec(model_dir(tmp_path, torch.float32))
    trainer = Trainer(Bus(), Specs(spec), data, "")
    rt = await train(trainer, "r", 1)
    saved = {n: t.clone() for n, t in rt.engine.model.state_dict().items()}

    async def disk_full(*args):
        raise OSError(28, "No space left on device")

    trainer._commit = disk_full
    sample = ev.Sample(
        sample_id="r.g0.0",
        prompt_token_ids=[1, 5],
        completion_token_ids=[6, 7],
        logprobs=[-1.0, -1.0],
        token_versions=[1, 1],
    )
    group = ev.ScoredGroup(group=ev.PromptGroup(group_id="r.g0", samples=[sample, sample]), rewards=[1.0, 0.0])
    batch = ev.Batch(run_id="r", batch_id="r.b1", step=1, policy_version=1, groups=[group])
    trainer.specs.sealed[batch.batch_id] = batch_digest(batch)
    with pytest.raises(OSError, match="No space"):
        await trainer.on_batch(batch, None)
    assert "r" not in trainer.runs  # dropped: the next delivery starts from disk
    again = await trainer.run("r")
    assert again.state.version == 1 and "r.b1" not in again.state.trained_batches
    assert all(torch.equal(again.engine.model.state_dict()[n], saved[n]) for n in saved)


async def test_an_ended_run_s_engine_is_dropped(tmp_path):
    trainer = Trainer(Bus(), Specs(run_spec(model_dir(tmp_path, torch.float32))), tmp_path / "data", "")
    await train(trainer, "r", 1)
    await trainer.on_control(ev.Control(run_id="r", kind=ev.Control.ABORT), None)
    assert "r" in trainer.runs  # an APRIL abort is not the end of the run
    await trainer.on_control(ev.Control(run_id="r", kind=ev.Control.COMPLETED), None)
    assert "r" not in trainer.runs


def test_a_trainer_state_from_before_engine_records_still_loads(tmp_path):
    from svc_trainer.checkpoint import load_state, run_dir

    path = run_dir(tmp_path, "r") / "trainer.pt"
    path.parent.mkdir(parents=True)
    torch.save({"version": 4, "samples_trained": 8, "optimizer": {"state": {}, "param_groups": []}}, path)
    state = load_state(tmp_path, "r")
    assert state.version == 4 and state.engine == {"optimizer": {"state": {}, "param_groups": []}}
