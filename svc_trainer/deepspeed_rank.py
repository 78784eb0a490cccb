"""One DeepSpeed rank: a process the trainer starts (svc_trainer/ranks.py) that holds its share of
the model and optimizer and carries out the trainer's commands (svc_trainer/deepspeed_engine.py
plans them): open, step, save_weights, save_state, load_state, close. Every rank gets every
command; the ranks meet in DeepSpeed's collectives and in the few reductions below.
"""

from __future__ import annotations

import os
import shutil
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from jetrl.config import RunSpec
from svc_trainer.api import TrainSample
from svc_trainer.engine import Gap, TokenLogprobs, TokenMean, sample_tensors, token_logprobs
from svc_trainer.kl import kl_per_token
from svc_trainer.loss import decoupled_ppo_loss, kept_tokens, loss_metrics
from svc_trainer.ranks import BEAT, die_with_parent

__all__ = ["rank_main"]

STAGING = ".staging"
DUMMY = TrainSample(prompt_token_ids=[0], completion_token_ids=[0], logprobs=[0.0], advantage=0.0)
COUNTS = ("loss", "valid", "kept", "capped", "clipped", "w_sum", "kl_sum")


def rank_main(rank: int, world: int, port: int, pipe, timeout_s: float) -> None:
    """A rank's life: join the group, then do each command from the trainer until `close` or
    until the trainer is gone; a failed command is reported, and ends the rank."""
    die_with_parent()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(rank)
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # ranks share the cores
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )
    state: RankEngine | None = None
    while True:
        try:
            command, *args = pipe.recv()
        except (EOFError, OSError):
            return  # the trainer is gone
        if command == "close":
            return
        try:
            if command == "open":
                state = RankEngine(*args, rank=rank, world=world, beat=lambda: pipe.send((BEAT, None)))
                reply: Any = None
            else:
                assert state is not None, f"{command!r} before 'open'"
                reply = getattr(state, command)(*args)
        except Exception:
            pipe.send(("error", traceback.format_exc(limit=8)))
            return
        pipe.send(("ok", reply))


class RankEngine:
    """This rank's DeepSpeed engine for one run."""

    def __init__(self, spec: RunSpec, exact: Path | None, checkpoints: Path, *, rank: int, world: int, beat):
        import deepspeed

        from jetrl.policy.load import copy_state, load_policy, read_state_file
        from jetrl.policy.temperature import logprob_temperature
        from svc_trainer.deepspeed_config import ds_config
        from svc_trainer.kl import kl_reference

        self.spec, self.rank, self.world = spec, rank, world
        self.beat = beat  # tells the trainer this rank is making progress (ranks.py's deadline)
        self.train = spec.train
        self.checkpoints = checkpoints
        self.committed: str | None = None  # the checkpoint the trainer state names (never pruned)
        model, _ = load_policy(spec.model.path)
        if exact is not None:
            copy_state(model, read_state_file(model, exact))
        self.device = torch.device("cuda", rank) if torch.cuda.is_available() else torch.device("cpu")
        reference = kl_reference(spec, None)
        self.reference = reference.to(self.device) if reference is not None else None
        self.temperature = logprob_temperature(spec.rollout.temperature)
        model.train()  # as the torch engine (from_pretrained gives eval mode: dropout off)
        self.beat()
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.train.lr, weight_decay=self.train.weight_decay)
        self.engine, *_ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=ds_config(self.train, world), dist_init_required=False
        )

    def _logprobs(self, samples: list[TrainSample], grad: bool, model=None) -> TokenLogprobs:
        """token_logprobs of `samples` (a one-token stand-in when empty: every rank must forward)."""
        rows = samples or [DUMMY]
        self.beat()
        return token_logprobs(
            model or self.engine,
            [s.prompt_token_ids for s in rows],
            [s.completion_token_ids for s in rows],
            self.temperature,
            self.device,
            grad,
        )

    def step(self, sizes: list[int], lr: float, plan: list[list[list[TrainSample]]]) -> dict[str, float]:
        """One version at rate `lr`: per minibatch of `plan` (this rank's micro-batches; `sizes` the
        samples of each minibatch over all ranks) an optimizer step. The same metrics on every rank."""
        t = self.train
        for group in self.engine.optimizer.param_groups:  # ZeRO's wrapper shows its AdamW's groups
            group["lr"] = lr
        # Proximal log-probs: the weights before this version's first update. The kept-token count
        # must be summed over ranks before any backward, so they come from a no-grad pass over
        # every micro-batch, unless each rank has one minibatch in one micro-batch: then, as in
        # the torch engine, they are that micro-batch's forward detached (one pass fewer).
        single = len(plan) == 1 and len(plan[0]) == 1
        first: TokenLogprobs | None = None
        if single:
            first = self._logprobs(plan[0][0], grad=True)
            proximal = [[TokenLogprobs(first.logprobs.detach(), first.mask, first.entropy)]]
        else:
            proximal = [[self._logprobs(mb, grad=False) for mb in minibatch] for minibatch in plan]
        totals: dict[str, float] = {}
        gap, entropies = Gap(), TokenMean()
        for minibatch, prox_mb, size in zip(plan, proximal, sizes):
            local = dict.fromkeys(COUNTS, 0.0)
            for mb, (prox, real, entropy) in zip(minibatch, prox_mb):
                if mb:
                    behaviour, trainable, fresh = sample_tensors(mb, prox)
                    entropies.add(entropy[real & trainable])
                    kept, capped = kept_tokens(torch.exp(prox - behaviour), real & trainable, t.behaviour_weight_cap)
                    local["valid"] += float((real & trainable).sum())
                    local["capped"] += float(capped.sum())
                    local["kept"] += float(kept.sum())
                    gap.add((behaviour - prox).abs()[real & fresh])
            summed = self._reduce([local["valid"], local["capped"], local["kept"]])
            counts = {**local, **dict(zip(("valid", "capped", "kept"), summed))}
            grad_norm = 0.0
            if counts["kept"]:  # else no token counts: no step (AdamW would still move), as the torch engine
                denom = size * self.spec.rollout.max_new_tokens if t.loss_agg == "constant" else counts["kept"]
                counts, grad_norm = self._update(minibatch, prox_mb, denom, first)
            metrics = {**loss_metrics(counts, self.reference is not None), "grad_norm": grad_norm}
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + (v if k == "tokens" else v / len(plan))
        return {**totals, **self._gap(gap), "entropy": self._merged(entropies).mean()}

    def _update(self, minibatch, prox_mb, denom: float, first=None) -> tuple[dict[str, float], float]:
        """Backward every micro-batch (each rank's loss its share of the global one), one optimizer
        step; the counts summed over ranks and the gradient norm before clipping. `first`: the
        only micro-batch's forward, already made."""
        t = self.train
        local = dict.fromkeys(COUNTS, 0.0)
        for k, (mb, (prox, _, _)) in enumerate(zip(minibatch, prox_mb)):
            self.engine.set_gradient_accumulation_boundary(k == len(minibatch) - 1)
            current, real, _ = first if first is not None else self._logprobs(mb, grad=True)
            if not mb:  # the stand-in: a zero loss, so this rank's collectives line up with the others'
                self.engine.backward(current.sum() * 0.0)
                continue
            behaviour, trainable, _ = sample_tensors(mb, current)
            kl = None
            if self.reference is not None:
                ref = self._logprobs(mb, grad=False, model=self.reference)[0]
                kl = kl_per_token(current, ref, t.kl_estimator)
            out = decoupled_ppo_loss(
                current,
                prox,
                behaviour,
                torch.tensor([s.advantage for s in mb], device=self.device)[:, None].expand_as(current),
                real & trainable,
                eps_low=t.clip_eps_low,
                eps_high=t.clip_eps_high,
                weight_cap=t.behaviour_weight_cap,
                aggregation="constant",
                constant=denom / self.world,  # DeepSpeed averages the ranks' gradients
                kl=kl,
                kl_coef=t.kl_coef,
            )
            self.engine.backward(out.loss)
            for key in COUNTS:
                local[key] += out.counts[key]
        self.engine.step()
        counts = dict(zip(COUNTS, self._reduce([local[k] for k in COUNTS])))
        counts["loss"] /= self.world  # each rank's loss was scaled by world for DeepSpeed's mean
        return counts, float(self.engine.get_global_grad_norm() or 0.0)

    def _reduce(self, values: list[float], op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> list[float]:
        """`values` reduced over the ranks, on the rank's device: NCCL reduces only GPU tensors."""
        reduced = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(reduced, op=op)
        return reduced.tolist()

    def _merged(self, mean: TokenMean) -> TokenMean:
        """The per-token mean over every rank's tokens."""
        total, count = self._reduce([mean.total, mean.count])
        merged = TokenMean()
        merged.total, merged.count = total, int(count)
        return merged

    def _gap(self, gap: Gap) -> dict[str, float]:
        (biggest,) = self._reduce([gap.max], dist.ReduceOp.MAX)
        merged, everyone = Gap(), self._merged(gap)
        merged.total, merged.count, merged.max = everyone.total, everyone.count, biggest
        return merged.metrics()

    def save_weights(self, path: Path, dtype: torch.dtype | None, shard_bytes: int) -> Path | None:
        """Rank 0 writes the version (float32 unless `dtype`), the parameters gathered under ZeRO-3."""
        import deepspeed

        from svc_trainer.checkpoint import save_weights

        module = self.engine.module
        written = None
        gathered = deepspeed.zero.GatheredParameters(
            list(module.parameters()), enabled=self.train.deepspeed.zero_stage == 3
        )
        with gathered:
            if self.rank == 0:
                written = save_weights(path, module, dtype or torch.float32, shard_bytes)
        return written

    def save_state(self, version: int) -> dict[str, Any]:
        """DeepSpeed's checkpoint of `version`, renamed into place once every rank's files are on
        disk; then every checkpoint but it and the one the trainer state still names is deleted."""
        tag = f"v{version:06d}"
        staging = self.checkpoints / STAGING
        if self.rank == 0:
            shutil.rmtree(staging, ignore_errors=True)  # a save a crash interrupted
        dist.barrier()
        self.engine.save_checkpoint(str(staging), tag=tag, save_latest=False)
        self.beat()
        dist.barrier()
        if self.rank == 0:
            for file in (staging / tag).glob("*"):
                _fsync(file)
            _fsync(staging / tag)
            final = self.checkpoints / tag
            shutil.rmtree(final, ignore_errors=True)  # saved before a crash, never recorded
            os.replace(staging / tag, final)
            _fsync(self.checkpoints)
            shutil.rmtree(staging)  # what DeepSpeed wrote beside the tag (its zero_to_fp32.py)
            for old in self.checkpoints.glob("v*"):
                if old.name not in (tag, self.committed):
                    shutil.rmtree(old, ignore_errors=True)
        self.committed = tag
        return {"checkpoint": tag, "ranks": self.world, "zero_stage": self.train.deepspeed.zero_stage}

    def load_state(self, record: dict[str, Any]) -> None:
        path, _ = self.engine.load_checkpoint(
            str(self.checkpoints), tag=record["checkpoint"], load_optimizer_states=True, load_lr_scheduler_states=False
        )
        if path is None:
            raise FileNotFoundError(f"DeepSpeed checkpoint {self.checkpoints / record['checkpoint']} is missing")
        self.committed = record["checkpoint"]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
