"""The trainer: one update per batch, then a new policy version on the bus.

The batch of step S is trained by the trainer holding version S and makes S+1. Every token is
checked against the staleness bound here, the last guard: tokens older than η versions are masked
out of the loss (svc_trainer.staleness), and each sample's SampleAdvantage says how many.

A batch is acked only after the new version's weights and the trainer state are on disk and the
announcement is published. A batch that arrives again (redelivered after a crash) for a version
already trained is not trained twice: its announcement is published again (same message id, so
JetStream drops it if the first one got through) and it is acked.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from jetrl.bus import Delivery, InvalidEvent, Kind, Wait, publish
from jetrl.crash import crash_point
from jetrl.digest import batch_digest
from jetrl.ids import teacher_msg_id, weights_msg_id
from jetrl.logs import log_fields
from jetrl.runs import RunNotFound, RunSpecs
from jetrl.telemetry import Attr, tracer
from jetrl.v1 import events_pb2
from jetrl.views import split
from jetrl.weights import file_sha256, verified, version_files
from svc_trainer import advantages, staleness
from svc_trainer.checkpoint import (
    TrainerState,
    load_state,
    master_path,
    prune_versions,
    published,
    run_dir,
    save_state,
    save_weights,
    weights_path,
)
from svc_trainer.kl import kl_penalties, kl_reference
from svc_trainer.lr import lr_at
from svc_trainer.ranks import RanksFailed
from svc_trainer.teacher import EmaTeacher, ema_rate, teacher_path

if TYPE_CHECKING:  # torch loads when a run needs it, not at import
    import torch

    from svc_trainer.api import TrainEngine

log = logging.getLogger(__name__)
T = TypeVar("T")


class NotYourTurn(Wait):
    """A batch for a later version than the trainer holds: it waits for the earlier batch (held,
    say, by a trainer that died, until its ack wait lapses), without counting as a failure."""


class NonFiniteStep(RuntimeError):
    """A training step gave a non-finite loss or gradient: no version can be made of it."""


@dataclass
class RunTrainer:
    engine: TrainEngine
    state: TrainerState
    teacher: EmaTeacher | None = None  # runs with a `teacher` only
    reference: torch.nn.Module | None = None  # the KL anchor of `train.kl_in: reward` runs only
    publish_dtype: torch.dtype | None = None  # the starting model's, when not float32 (bf16 models)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Trainer:
    def __init__(
        self,
        js,
        specs: RunSpecs,
        data_dir: Path,
        advertised_addr: str,
        *,
        ranks: int = 0,
        collective_timeout_s: float = 300.0,
    ):
        self.js = js
        self.specs = specs
        self.data_dir = Path(data_dir)
        self.advertised_addr = advertised_addr
        self.ranks = ranks  # JETRL_TRAINER_RANKS: overrides a DeepSpeed run's train.deepspeed.ranks
        self.collective_timeout_s = collective_timeout_s
        self.runs: dict[str, RunTrainer] = {}
        self.fatal: str | None = None  # why a run's DeepSpeed ranks failed: the trainer must restart
        self.ranks_failed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # a synchronous run's engine work, all of it on this one thread: see _on_engine_thread
        self._engine_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="train-engine")

    def _ranks_failed(self, reason: str) -> None:
        """From a rank group's watcher thread: remember why, and wake the service (app.py:ranks)."""
        self.fatal = self.fatal or reason
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.ranks_failed.set)

    def close(self) -> None:
        """End every run's engine (a DeepSpeed run's rank processes)."""
        for rt in self.runs.values():
            rt.engine.close()
        self._engine_thread.shutdown(wait=False)

    async def run(self, run_id: str) -> RunTrainer:
        self._loop = asyncio.get_running_loop()
        if run_id not in self.runs:
            spec = await self.specs.get(run_id)
            self.runs[run_id] = await self._on_engine_thread(spec, self._restore, run_id, spec)
        return self.runs[run_id]

    def _restore(self, run_id: str, spec) -> RunTrainer:
        """The run's engine and teacher at the last saved version (version 0 from the model dir)."""
        import torch

        from jetrl.policy.load import config_dtype, copy_state, load_policy, read_state_file

        dtype = config_dtype(spec.model.path)
        publish_dtype = dtype if dtype is not None and dtype != torch.float32 else None
        state = load_state(self.data_dir, run_id) or TrainerState()
        exact = self._exact(run_id, state.version) if state.version else None
        if exact is not None and state.exact_sha256:  # (a state saved before it was recorded: unchecked)
            _check_saved(exact, state.exact_sha256, state.version)
        teacher = None
        if spec.teacher is not None:
            teacher = EmaTeacher(load_policy(spec.model.path)[0])  # version 0: the model directory's weights
            if state.version:
                saved = published(teacher_path(self.data_dir, run_id, state.version))
                announced = events_pb2.WeightsAnnouncement.FromString(state.teacher_announcement)
                _check_saved(saved, announced.sha256, state.version)
                copy_state(teacher.model, read_state_file(teacher.model, saved))
        engine = self._engine(run_id, spec, exact, teacher, state.engine)
        try:
            if state.engine:
                engine.load_state(state.engine)
        except BaseException:
            engine.close()  # a DeepSpeed run's ranks, started for nothing
            raise
        log.info("trainer restored", extra=log_fields(run=run_id, version=state.version, engine=spec.train.engine))
        reference = kl_reference(spec, teacher.model if teacher else None, use="reward")
        return RunTrainer(engine=engine, state=state, teacher=teacher, reference=reference, publish_dtype=publish_dtype)

    def _exact(self, run_id: str, version: int) -> Path:
        """A version's weights as the trainer holds them (float32): its master copy, when it was
        published in another dtype, else the published file (or index)."""
        exact = published(master_path(self.data_dir, run_id, version))
        return exact if exact.is_file() else published(weights_path(self.data_dir, run_id, version))

    def _engine(
        self, run_id: str, spec, exact: Path | None, teacher: EmaTeacher | None, record: dict | None
    ) -> TrainEngine:
        """The run's engine (`train.engine`; `simulation` swaps in the simulated one) with the
        weights of `exact` (None: the model directory's), able to load `record`."""
        from jetrl.policy.load import copy_state, load_policy, read_state_file
        from svc_trainer.engine import TorchTrainEngine
        from svc_trainer.simulated import SimulatedTrainEngine

        if spec.train.engine == "deepspeed":
            from svc_trainer.deepspeed_engine import DeepSpeedTrainEngine, check_record

            ranks = self.ranks or spec.train.deepspeed.ranks
            if record:
                check_record(record, ranks)  # before any rank starts
            return DeepSpeedTrainEngine(
                spec,
                exact,
                run_dir(self.data_dir, run_id) / "deepspeed",
                ranks=ranks,
                timeout_s=self.collective_timeout_s,
                on_failure=self._ranks_failed,
            )
        model, _ = load_policy(spec.model.path)  # trained in float32
        if exact is not None:
            copy_state(model, read_state_file(model, exact))
        if spec.simulation is not None:
            return SimulatedTrainEngine(model, spec.train, spec.simulation)
        return TorchTrainEngine(
            model,
            spec.train,
            temperature=spec.rollout.temperature,
            max_new_tokens=spec.rollout.max_new_tokens,
            reference=kl_reference(spec, teacher.model if teacher else None),
        )

    async def on_batch(self, batch: events_pb2.Batch, delivery: Delivery) -> None:
        if self.fatal:  # exiting to be restarted: the batch waits for the new trainer
            raise RanksFailed(self.fatal)
        try:
            spec = await self.specs.get(batch.run_id)
        except RunNotFound as exc:
            raise InvalidEvent(str(exc)) from None
        if batch.step != batch.policy_version:
            raise InvalidEvent(f"batch {batch.batch_id} is for step {batch.step} but names v{batch.policy_version}")
        rt = await self.run(batch.run_id)
        async with rt.lock:
            if batch.batch_id in rt.state.trained_batches:
                await self._announce_again(batch, rt)
                return
            if batch.policy_version > rt.state.version:
                raise NotYourTurn(
                    f"batch {batch.batch_id} trains v{batch.policy_version}, trainer holds v{rt.state.version}"
                )
            if batch.policy_version < rt.state.version:
                raise InvalidEvent(
                    f"batch {batch.batch_id} is for v{batch.policy_version}, already past it (v{rt.state.version})"
                )
            # the scheduler's round trip runs beside the step; nothing is kept or announced before
            # it answers, and a batch lineage did not seal fails as that, whatever its step did
            sealed = asyncio.create_task(self._check_sealed(batch))
            try:
                penalties, kl_metrics = await self._on_engine_thread(spec, self._kl_penalties, rt, batch, spec)
                samples, advs, stale_metrics = self._samples(batch, spec, penalties)
                await self._train(batch, rt, samples, advs, {**stale_metrics, **kl_metrics}, spec, sealed)
            except Exception:
                # the engine (and the teacher) may hold weights past what is on disk: the next
                # delivery starts again from the saved version, never trains the batch twice
                await self._on_engine_thread(spec, self._forget, batch.run_id)
                await sealed
                raise
            finally:
                sealed.cancel()  # only still running when this handling was cancelled

    async def _check_sealed(self, batch: events_pb2.Batch) -> None:
        """Train only the batch lineage sealed under this id, exactly: a forged one with the next
        batch id was trained, and the real one then dropped as its duplicate."""
        try:
            sealed = await self.specs.batch_digest(batch.run_id, batch.batch_id)
        except RunNotFound as exc:
            raise InvalidEvent(str(exc)) from None
        if batch_digest(batch) != sealed:
            raise InvalidEvent(f"batch {batch.batch_id} is not the batch lineage sealed under that id")

    async def _train(self, batch, rt: RunTrainer, samples, advs, stale_metrics, spec, sealed: asyncio.Task) -> None:
        with tracer.start_as_current_span("train step") as span:
            span.set_attributes({Attr.BATCH_ID: batch.batch_id, Attr.SAMPLES: len(samples)})
            # Never empty-handed: a batch with no trainable token still makes a version
            # (the engine skips the optimizer step, so its weights are the previous ones).
            lr = lr_at(rt.state.version + 1, spec.train)
            metrics = {**await self._on_engine_thread(spec, rt.engine.train_step, samples, lr), "lr": lr}
        await sealed
        if bad := sorted(k for k, v in metrics.items() if not math.isfinite(v)):
            # fails every time: dead-lettered after its retries, and the scheduler fails the run
            raise NonFiniteStep(
                f"batch {batch.batch_id}: non-finite {', '.join(bad)} "
                f"({', '.join(f'{k}={metrics[k]}' for k in bad)}); check the rewards' scale "
                "(reward.max_abs_reward) and train.lr"
            )
        await self._commit(batch, rt, advs, {**metrics, **stale_metrics}, spec)

    async def _on_engine_thread(self, spec, fn: Callable[..., T], *args) -> T:
        """`fn(*args)`, torch work of the run's engine, off the event loop. torch's OpenMP runtime
        gives every thread that runs a parallel op a team of its own; once a second one lives
        (asyncio.to_thread takes any thread of its pool), libgomp counts more threads than cores
        and its workers stop spinning between a step's thousands of short parallel regions: the
        demo's step took ~80 ms in the service instead of ~30. A synchronous run's (eta = 0) engine
        work runs on one thread of its own, one team, spinning: nothing else computes while it
        trains (generation waits for the version). With eta > 0 generation runs beside the step and
        a spinning team would take the core it needs (measured: the trainer's CPU tripled and the
        run was slower), so that work stays on the pool."""
        if spec.schedule.max_staleness > 0:
            return await asyncio.to_thread(fn, *args)
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._engine_thread, call)

    def _forget(self, run_id: str) -> None:
        """Drop a run's engine (ending a DeepSpeed run's ranks); it is built again from disk if needed."""
        rt = self.runs.pop(run_id, None)
        if rt is not None:
            rt.engine.close()

    async def on_control(self, control: events_pb2.Control, delivery: Delivery) -> None:
        """A run that ended (stopped, failed or completed) needs its engine no more."""
        if control.kind in (events_pb2.Control.STOP, events_pb2.Control.COMPLETED) and control.run_id in self.runs:
            async with self.runs[control.run_id].lock:  # not in the middle of its step
                await asyncio.to_thread(self._forget, control.run_id)

    def _kl_penalties(self, rt: RunTrainer, batch: events_pb2.Batch, spec) -> tuple[dict[str, float], dict[str, float]]:
        """`train.kl_in: reward`: sample id -> β · Σ_t k(t), to come off its reward, and the
        version's KL metrics; nothing for other runs (a loss-side KL is the engine's)."""
        if rt.reference is None:
            return {}, {}
        import torch

        from jetrl.policy.temperature import logprob_temperature
        from svc_trainer.engine import token_logprobs

        trained = [scored.group.samples[i] for scored, positions in _trained_views(batch) for i in positions]
        completions = [list(s.completion_token_ids) for s in trained]
        device = next(rt.reference.parameters()).device
        temperature = logprob_temperature(spec.rollout.temperature)
        ref, real, _ = token_logprobs(
            rt.reference, [s.prompt_token_ids for s in trained], completions, temperature, device, grad=False
        )
        behaviour = torch.zeros_like(ref)
        for row, s in enumerate(trained):
            behaviour[row, : len(s.logprobs)] = torch.tensor(list(s.logprobs), dtype=ref.dtype)
        values, kl = kl_penalties(behaviour, ref, real, spec.train.kl_estimator, spec.train.kl_coef)
        penalties = {s.sample_id: v for s, v in zip(trained, values)}
        return penalties, {"kl": kl, "kl_penalty": sum(values) / len(values) if values else 0.0}

    def _samples(self, batch: events_pb2.Batch, spec, penalties: dict[str, float] | None = None):
        """TrainSamples masked by the staleness bound, their SampleAdvantage records, and the
        batch's staleness metrics. `penalties` (sample id -> amount) come off the rewards before
        the advantages (`train.kl_in: reward`); the records keep the reward as scored."""
        from svc_trainer.api import TrainSample

        samples, advs, checked = [], [], []
        for scored, positions in _trained_views(batch):
            rewards = [scored.rewards[i] for i in positions]
            owed = [(penalties or {}).get(scored.group.samples[i].sample_id, 0.0) for i in positions]
            group_adv = advantages.compute(
                spec.train.advantage, [r - p for r, p in zip(rewards, owed)], mc_scale=spec.train.mc_scale
            )
            for sample, reward, adv in zip((scored.group.samples[i] for i in positions), rewards, group_adv):
                try:
                    st = staleness.token_staleness(
                        sample.token_versions,
                        batch.step,
                        spec.schedule.max_staleness,
                        recycled=sample.prefix_len,
                        recycled_staleness=spec.schedule.recycled_bound,
                    )
                except ValueError as exc:  # a token from a version not published yet
                    raise InvalidEvent(f"sample {sample.sample_id}: {exc}") from None
                if adv is None:  # mc_grpo's pivot: no gradient, not even a share of the token-mean
                    st, adv = staleness.excluded(st), 0.0
                checked.append(st)
                samples.append(
                    TrainSample(
                        prompt_token_ids=list(sample.prompt_token_ids),
                        completion_token_ids=list(sample.completion_token_ids),
                        logprobs=list(sample.logprobs),
                        advantage=float(adv),
                        trainable=st.trainable,
                        fresh=[v == batch.step for v in sample.token_versions],
                    )
                )
                advs.append(
                    events_pb2.SampleAdvantage(
                        sample_id=sample.sample_id,
                        reward=reward,
                        advantage=adv,
                        staleness=st.staleness,
                        trained_tokens=st.trained_tokens,
                        stale_masked_tokens=st.stale_masked_tokens,
                        offpolicy_tokens=st.offpolicy_tokens,
                    )
                )
        return samples, advs, staleness.batch_metrics(checked)

    async def _commit(self, batch, rt: RunTrainer, advs, metrics: dict, spec) -> None:
        state = rt.state
        version = state.version + 1
        run_id = batch.run_id
        shard = spec.train.weights_shard_mb << 20
        path = await self._on_engine_thread(
            spec, rt.engine.save_weights, weights_path(self.data_dir, run_id, version), rt.publish_dtype, shard
        )
        exact_sha = ""  # the published file's, from its announcement, unless a master copy is kept
        if rt.publish_dtype is not None:  # published in another precision: keep the exact weights to resume
            master = master_path(self.data_dir, run_id, version)
            master = await self._on_engine_thread(spec, rt.engine.save_weights, master, None, shard)
            exact_sha = await asyncio.to_thread(file_sha256, master)
        teacher_ann = None
        if rt.teacher is not None:
            m = ema_rate(version, spec.train.steps, spec.teacher)
            # from the version's exact file: the same whichever engine (or ranks) holds the policy
            await self._on_engine_thread(spec, rt.teacher.update_from, self._exact(run_id, version), m)
            metrics = {**metrics, "teacher_ema": m}
            tpath = await self._on_engine_thread(
                spec, save_weights, teacher_path(self.data_dir, run_id, version), rt.teacher.model, None, shard
            )
            # its own subject; fetched like the policy (the shared file, else FetchWeights with teacher set)
            teacher_ann = await self._announcement(batch, version, tpath, {"ema_rate": m})
        ann = await self._announcement(batch, version, path, {k: float(v) for k, v in metrics.items()})
        ann.advantages.extend(advs)
        ann.samples_trained_total = state.samples_trained + len(advs)
        saved = replace(
            state,
            version=version,
            samples_trained=state.samples_trained + len(advs),
            batches_trained=state.batches_trained + 1,
            trained_batches=[*state.trained_batches, batch.batch_id],
            engine=await self._on_engine_thread(spec, rt.engine.save_state, version),
            announcement=ann.SerializeToString(),
            exact_sha256=exact_sha or ann.sha256,
            teacher_announcement=teacher_ann.SerializeToString() if teacher_ann is not None else b"",
        )
        await asyncio.to_thread(save_state, self.data_dir, run_id, saved)
        rt.state = saved  # only once it is on disk
        crash_point("train.saved")
        await self._publish(run_id, ann, teacher_ann)
        await asyncio.to_thread(self._prune, run_id, version, spec.train)
        log.info("version published", extra=log_fields(run=run_id, version=version, **metrics))

    def _prune(self, run_id: str, version: int, train) -> None:
        """Once the state says `version`: older master copies go, and the version files outside
        the retention rule (train.keep_last_versions, keep_every_versions)."""
        for old in prune_versions(master_path(self.data_dir, run_id, version).parent, version, 1, 0):
            log.debug("master copy dropped", extra=log_fields(run=run_id, version=old))
        for folder in (weights_path, teacher_path):
            where = folder(self.data_dir, run_id, version).parent
            prune_versions(where, version, train.keep_last_versions, train.keep_every_versions)

    async def _announcement(self, batch, version: int, path: Path, metrics: dict[str, float]):
        """A version's weights announcement (the policy's or the teacher's): where its safetensors
        file (or shards' index) is, how to stream it from this trainer, its sha256 (read from the
        file in chunks; an index carries its shards') and the bytes of its tensors."""
        return events_pb2.WeightsAnnouncement(
            run_id=batch.run_id,
            version=version,
            parent_version=version - 1,
            batch_id=batch.batch_id,
            uri=path.as_uri(),
            grpc_endpoint=self.advertised_addr,
            size_bytes=sum(f.stat().st_size for f in version_files(path)),
            sha256=await asyncio.to_thread(file_sha256, path),
            format="safetensors",
            metrics=metrics,
        )

    async def _publish(self, run_id: str, ann, teacher_ann) -> None:
        await publish(self.js, run_id, Kind.WEIGHTS, ann, msg_id=weights_msg_id(run_id, ann.version))
        if teacher_ann is not None:
            await publish(
                self.js, run_id, Kind.TEACHER, teacher_ann, msg_id=teacher_msg_id(run_id, teacher_ann.version)
            )

    async def _announce_again(self, batch, rt: RunTrainer) -> None:
        ann = events_pb2.WeightsAnnouncement.FromString(rt.state.announcement) if rt.state.announcement else None
        if ann is None or ann.batch_id != batch.batch_id:
            return  # an older batch: its announcement went out long ago
        teacher = rt.state.teacher_announcement
        await self._publish(batch.run_id, ann, events_pb2.WeightsAnnouncement.FromString(teacher) if teacher else None)
        log.info("batch already trained; announcement re-sent", extra=log_fields(batch=batch.batch_id))


class TamperedState(RuntimeError):
    """A saved version's files no longer hold what the trainer wrote: it will not train from them."""


def _check_saved(path: Path, sha256: str, version: int) -> None:
    """Refuse to resume from a version whose file (or shards) changed since the trainer saved it."""
    if not verified(path, sha256):
        raise TamperedState(
            f"{path} (v{version}) does not hold the weights the trainer saved (missing, or its sha256 is not "
            f"{sha256[:12]}…): put the saved files back, or start a new run from an exported version"
        )


def _trained_views(batch: events_pb2.Batch):
    """(scored group, positions of one trained view's samples) for every view that is trained:
    advantages are relative within a view (docs/design.md §5), and context views (teacher samples) are
    never trained."""
    for scored in batch.groups:
        for view, positions in split(scored.group):
            if view.trained:
                yield scored, positions
