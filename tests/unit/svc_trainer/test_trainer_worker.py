"""The trainer worker (svc_trainer/worker.py) without a bus: how a Batch becomes TrainSamples and
SampleAdvantage records under the staleness bound, and which engine a run gets.

(Named test_trainer_worker.py: tests/ has no __init__.py files, so test module names must be
unique across folders.)
"""

import asyncio
import threading

import pytest

from jetrl.bus import InvalidEvent
from jetrl.config import RunSpec
from jetrl.digest import batch_digest
from jetrl.policy import make_char_tokenizer, make_tiny_model, save_policy
from jetrl.runs import RunNotFound
from jetrl.spec_sections import ModelSpec, ScheduleSpec, SimulationSpec, TrainSpec
from jetrl.v1 import events_pb2 as ev
from svc_trainer.engine import TorchTrainEngine
from svc_trainer.simulated import SimulatedTrainEngine
from svc_trainer.worker import Trainer


def spec(path="unused", **fields):
    return RunSpec(model=ModelSpec(path=str(path)), schedule=ScheduleSpec(max_staleness=1), **fields)


def batch(step, versions, policy_version=None):
    """One group of samples with completions of len(versions[i]) tokens, rewards 1, 0, 1, 0..."""
    samples = [
        ev.Sample(
            sample_id=f"r.g0.{i}",
            prompt_token_ids=[1, 5],
            completion_token_ids=[6] * len(v),
            logprobs=[-0.5] * len(v),
            token_versions=v,
        )
        for i, v in enumerate(versions)
    ]
    group = ev.ScoredGroup(
        group=ev.PromptGroup(group_id="r.g0", samples=samples),
        rewards=[float(i % 2 == 0) for i in range(len(versions))],
    )
    return ev.Batch(
        run_id="r",
        batch_id=f"r.b{step}",
        step=step,
        policy_version=step if policy_version is None else policy_version,
        groups=[group],
    )


def test_samples_carry_the_staleness_mask_and_counts(tmp_path):
    trainer = Trainer(None, None, tmp_path, "127.0.0.1:1")
    # step S = 4, η = 1:
    # sample 0: versions [3, 4, 4] -> lags [1, 0, 0]: all trainable, staleness 1, one off-policy token
    # sample 1: versions [2, 2, 3] -> lags [2, 2, 1]: first two masked, staleness 1, one off-policy token
    samples, advs, metrics = trainer._samples(batch(4, [[3, 4, 4], [2, 2, 3]]), spec())
    assert [s.trainable for s in samples] == [(True, True, True), (False, False, True)]
    # grpo on rewards [1, 0]: mean 0.5, unbiased std √0.5 -> advantages ±0.5 / √0.5 = ±0.7071
    assert [s.advantage for s in samples] == pytest.approx([0.70711, -0.70711], abs=1e-5)
    assert [(a.sample_id, a.reward) for a in advs] == [("r.g0.0", 1.0), ("r.g0.1", 0.0)]
    assert [a.advantage for a in advs] == pytest.approx([0.70711, -0.70711], abs=1e-5)
    assert [(a.staleness, a.trained_tokens, a.stale_masked_tokens, a.offpolicy_tokens) for a in advs] == [
        (1, 3, 0, 1),
        (1, 1, 2, 1),
    ]
    # off-policy share (1 + 1) / (3 + 1) trained tokens; 2 tokens masked
    assert metrics == {"offpolicy_token_share": 0.5, "stale_masked_tokens": 2.0}


def test_a_recycled_prefix_is_trained_within_the_runs_recycled_bound(tmp_path):
    trainer = Trainer(None, None, tmp_path, "")
    b = batch(4, [[3, 3, 4], [3, 4]])
    b.groups[0].group.samples[0].prefix_len = 2  # its v3 tokens were handed back by an aborted attempt
    april = RunSpec(
        model=ModelSpec(path="unused"),
        schedule=ScheduleSpec(max_staleness=0, over_provision=2.0, recycled_staleness=1),
    )
    samples, advs, _ = trainer._samples(b, april)
    # sample 0's recycled v3 tokens lag 1 <= 1: trained; sample 1's v3 token was not recycled: η = 0 masks it
    assert [s.trainable for s in samples] == [(True, True, True), (False, True)]
    assert [(a.trained_tokens, a.offpolicy_tokens) for a in advs] == [(3, 2), (1, 0)]


def test_all_stale_samples_still_get_their_advantage_recorded(tmp_path):
    samples, advs, metrics = Trainer(None, None, tmp_path, "")._samples(batch(9, [[1, 2], [3]]), spec())
    assert [s.trainable for s in samples] == [(False, False), (False,)]
    assert [(a.trained_tokens, a.stale_masked_tokens, a.staleness) for a in advs] == [(0, 2, 0), (0, 1, 0)]
    assert [a.advantage for a in advs] == pytest.approx([0.70711, -0.70711], abs=1e-5)
    assert metrics == {"offpolicy_token_share": 0.0, "stale_masked_tokens": 3.0}


def test_the_mc_grpo_pivot_is_kept_out_of_the_loss(tmp_path):
    # rewards [1, 0, 1]: pivot = index 0 (median 1); the others get (r - 1) / (std + 1e-6)
    run = spec(rollout={"group_size": 3}, train={"advantage": "mc_grpo"})
    samples, advs, metrics = Trainer(None, None, tmp_path, "")._samples(batch(4, [[4, 4], [4], [3, 4]]), run)
    assert [s.trainable for s in samples] == [(False, False), (True,), (True, True)]
    assert samples[0].advantage == 0.0 and samples[1].advantage < 0 and samples[2].advantage == 0.0
    assert [(a.advantage, a.trained_tokens) for a in advs][0] == (0.0, 0)
    assert metrics["offpolicy_token_share"] == pytest.approx(1 / 3)  # 1 of the 3 trained tokens is v3


def test_token_from_an_unpublished_version_is_an_invalid_batch(tmp_path):
    with pytest.raises(InvalidEvent, match="r.g0.1: token version 5 is newer than the trained version 4"):
        Trainer(None, None, tmp_path, "")._samples(batch(4, [[4], [4, 5]]), spec())


async def test_batch_whose_step_and_version_disagree_is_invalid(tmp_path):
    class Specs:
        async def get(self, run_id):
            return spec()

    with pytest.raises(InvalidEvent, match="step 3 but names v2"):
        await Trainer(None, Specs(), tmp_path, "").on_batch(batch(3, [[2]], policy_version=2), None)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = make_char_tokenizer()
    model = make_tiny_model(tok, hidden_size=16, layers=1, heads=2, intermediate_size=32, max_positions=32)
    return save_policy(model, tok, tmp_path_factory.mktemp("model"))


def test_simulation_gets_the_simulated_engine(tmp_path, model_dir):
    run = spec(model_dir, simulation=SimulationSpec(max_length=8))
    assert isinstance(Trainer(None, None, tmp_path, "")._restore("r", run).engine, SimulatedTrainEngine)


def test_real_runs_get_the_torch_engine_with_its_normaliser(tmp_path, model_dir):
    # loss_agg "constant" needs max_new_tokens: the trainer passes rollout.max_new_tokens
    run = spec(model_dir, train=TrainSpec(loss_agg="constant"))
    engine = Trainer(None, None, tmp_path, "")._restore("r", run).engine
    assert isinstance(engine, TorchTrainEngine) and engine.max_new_tokens == run.rollout.max_new_tokens


def test_advantages_are_per_trained_view_and_teacher_samples_are_never_trained(tmp_path):
    trainer = Trainer(None, None, tmp_path, "127.0.0.1:1")
    samples = [
        ev.Sample(
            sample_id=f"r.g0.{i}",
            index=i,
            prompt_token_ids=[1, 5],
            completion_token_ids=[6],
            logprobs=[-0.5],
            token_versions=[0],
        )
        for i in range(6)
    ]
    views = [
        ev.ViewPrompt(view="main", first_index=0, size=2, trained=True),
        ev.ViewPrompt(view="analogous", first_index=2, size=2, trained=True),
        ev.ViewPrompt(view="teacher", first_index=4, size=2, trained=False),
    ]
    # main [1, 0], analogous [1, 1] (no signal within its view), teacher samples unscored (0)
    group = ev.ScoredGroup(
        group=ev.PromptGroup(group_id="r.g0", samples=samples, views=views), rewards=[1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    )
    b = ev.Batch(run_id="r", batch_id="r.b0", step=0, policy_version=0, groups=[group])
    out, advs, _ = trainer._samples(b, spec(train=TrainSpec(advantage="dr_grpo")))
    assert [a.sample_id for a in advs] == [f"r.g0.{i}" for i in range(4)]
    # dr_grpo within each view: main mean 0.5 -> ±0.5; analogous mean 1 -> 0, not 1 - 0.75 over the pool
    assert [s.advantage for s in out] == [0.5, -0.5, 0.0, 0.0]


@pytest.mark.parametrize("sealed", ["other", "none"])
async def test_a_batch_other_than_the_one_lineage_sealed_is_not_trained(tmp_path, model_dir, sealed):
    """A forged Batch with the next batch id was trained, and the real one then dropped as its
    duplicate: the trainer trains only the batch whose digest the scheduler gives for that id."""
    real, forged = batch(0, [[0], [0]]), batch(0, [[0], [0]])
    forged.groups[0].rewards[1] = 1.0  # a forged reward

    class Scheduler:
        async def get(self, run_id):
            return spec(model_dir)

        async def batch_digest(self, run_id, batch_id):
            if sealed == "none":
                raise RunNotFound(f"run {run_id!r} sealed no batch {batch_id!r}")
            return batch_digest(real)

    trainer = Trainer(None, Scheduler(), tmp_path, "")
    with pytest.raises(InvalidEvent, match="not the batch lineage sealed" if sealed == "other" else "sealed no batch"):
        await trainer.on_batch(forged, None)
    assert (await trainer.run("r")).state.version == 0  # nothing trained


async def test_the_step_does_not_wait_for_the_scheduler_s_digest(tmp_path, model_dir, monkeypatch):
    """The round trip to the scheduler is off the version's path: the step runs while it is
    answered (this scheduler answers only once the step has started), then the version is made."""
    real = batch(0, [[0], [0]])
    stepped = threading.Event()
    published = []

    class Scheduler:
        async def get(self, run_id):
            return spec(model_dir)

        async def batch_digest(self, run_id, batch_id):
            assert await asyncio.to_thread(stepped.wait, 10), "the step waited for the digest"
            return batch_digest(real)

    async def publish(js, run_id, kind, event, msg_id):
        published.append(event.version)

    monkeypatch.setattr("svc_trainer.worker.publish", publish)
    trainer = Trainer(None, Scheduler(), tmp_path, "")
    engine = (await trainer.run("r")).engine
    step = engine.train_step

    def train_step(*args):
        stepped.set()
        return step(*args)

    monkeypatch.setattr(engine, "train_step", train_step)
    await trainer.on_batch(real, None)
    assert published == [1] and (await trainer.run("r")).state.version == 1


@pytest.mark.parametrize("eta", [0, 1])
async def test_a_synchronous_run_steps_on_one_thread_of_its_own(tmp_path, model_dir, monkeypatch, eta):
    """With eta = 0 every step runs on the trainer's engine thread (one OpenMP team, spinning: see
    Trainer._step); with eta > 0 on asyncio's pool, never on the event loop's thread."""
    run = RunSpec(model=ModelSpec(path=str(model_dir)), schedule=ScheduleSpec(max_staleness=eta))

    class Scheduler:
        async def get(self, run_id):
            return run

        async def batch_digest(self, run_id, batch_id):
            return batch_digest(batches[int(batch_id[3:])])

    async def publish(js, run_id, kind, event, msg_id):
        pass

    monkeypatch.setattr("svc_trainer.worker.publish", publish)
    trainer = Trainer(None, Scheduler(), tmp_path, "")
    engine = (await trainer.run("r")).engine
    step, threads = engine.train_step, []

    def train_step(*args):
        threads.append(threading.current_thread().name)
        return step(*args)

    monkeypatch.setattr(engine, "train_step", train_step)
    batches = [batch(s, [[s], [s]]) for s in range(3)]
    for b in batches:
        await trainer.on_batch(b, None)
    assert (await trainer.run("r")).state.version == 3 and threading.current_thread().name not in threads
    assert all(t.startswith("train-engine") for t in threads) == (eta == 0), threads
    trainer.close()


def test_the_digest_covers_what_trains_and_nothing_else():
    one, same = batch(0, [[0], [0]]), batch(0, [[0], [0]])
    same.groups[0].reward_server = "verify@2"  # who scored it, and how, train nothing
    same.groups[0].details.add(sample_id="r.g0.0", detail="answer 6")
    assert batch_digest(one) == batch_digest(same)
    for change in (
        lambda b: b.groups[0].rewards.__setitem__(0, 0.5),
        lambda b: b.groups[0].group.samples[0].completion_token_ids.append(7),
        lambda b: b.groups[0].group.samples[1].logprobs.__setitem__(0, -0.25),
        lambda b: b.groups[0].group.samples[1].token_versions.__setitem__(0, 1),
        lambda b: setattr(b.groups[0].group.samples[0], "prefix_len", 1),
    ):
        other = batch(0, [[0], [0]])
        change(other)
        assert batch_digest(other) != batch_digest(one)


def test_kl_in_reward_takes_the_penalty_off_the_reward_before_the_advantages(tmp_path):
    samples, advs, _ = Trainer(None, None, tmp_path, "")._samples(batch(0, [[0], [0]]), spec(), {"r.g0.0": 1.0})
    # rewards [1, 0] less penalties [1, 0]: all equal, so no advantage; the records keep the scored rewards
    assert [s.advantage for s in samples] == [0.0, 0.0]
    assert [a.reward for a in advs] == [1.0, 0.0]


def test_the_penalties_are_beta_times_the_k1_sum_against_the_reference(tmp_path):
    import torch

    from svc_trainer.engine import token_logprobs
    from svc_trainer.worker import RunTrainer
    from tiny_models import spread_model

    reference = spread_model()
    run = spec(train=TrainSpec(kl_coef=0.1, kl_in="reward", kl_estimator="k1"))
    b = batch(0, [[0, 0], [0]])  # completions [6, 6] and [6], behaviour log-prob −0.5 per token
    rt = RunTrainer(engine=None, state=None, reference=reference)  # type: ignore[arg-type]
    penalties, metrics = Trainer(None, None, tmp_path, "")._kl_penalties(rt, b, run)
    ref, _, _ = token_logprobs(reference, [[1, 5], [1, 5]], [[6, 6], [6]], 1.0, torch.device("cpu"), grad=False)
    by_hand = [0.1 * float((-0.5 - ref[0, :2]).sum()), 0.1 * float(-0.5 - ref[1, 0])]  # k1 = behaviour − ref
    assert [penalties["r.g0.0"], penalties["r.g0.1"]] == pytest.approx(by_hand, rel=1e-5)
    assert metrics["kl_penalty"] == pytest.approx(sum(by_hand) / 2, rel=1e-5)
    assert metrics["kl"] == pytest.approx(sum(by_hand) / 0.1 / 3, rel=1e-5)
    plain = RunTrainer(engine=None, state=None)  # type: ignore[arg-type]
    assert Trainer(None, None, tmp_path, "")._kl_penalties(plain, b, spec()) == ({}, {})
