"""DeepSpeed ZeRO train engine: the trainer's side (run spec `train.engine: deepspeed`).

The trainer process keeps the bus, the gRPC service and the checkpoint bookkeeping; the model lives
in `ranks` processes it starts (svc_trainer/ranks.py), each a data-parallel DeepSpeed rank
(svc_trainer/deepspeed_rank.py). This object plans each step and sends it to them:

- **Who consumes, who gets what.** The trainer's one durable consumer takes each batch exactly once,
  as with the torch engine. Each minibatch (`train.minibatches`, the same slices as the torch engine)
  is dealt out to the ranks by tokens, longest sample first to the rank with the fewest so far, so
  ranks get equal work; a rank's share is cut into micro-batches of at most
  `deepspeed.micro_batch_size` samples, as many on every rank (the largest share's count; a rank
  short of samples runs a zero-weight forward), because ZeRO's collectives need every rank to make
  the same calls.
- **The same update as the torch engine.** Proximal log-probs come from one no-grad pass before the
  first update; the kept-token count is summed over ranks before any backward, so each rank's loss
  is its share of the global token-mean (or Dr. GRPO constant) and DeepSpeed's mean over ranks
  makes the global gradient; metrics are sums over ranks (svc_trainer.loss.loss_metrics).
- **Who publishes.** Rank 0 writes the version's files, the parameters gathered first under ZeRO-3.
- **State.** DeepSpeed's own checkpoint (sharded optimizer state), one directory per version under
  `runs/<run>/deepspeed/`, written to a staging name and renamed once every rank's files are synced:
  a SIGKILL leaves the previous checkpoint or the new one. The trainer state records which one.
  A checkpoint loads on as many ranks as wrote it (checked first): DeepSpeed re-shards ZeRO-1/2
  optimizer state only for its own Adam (`elastic_checkpoint`), which keeps its step where torch's
  AdamW does not, and ZeRO-3's never.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from jetrl.config import RunSpec
from svc_trainer.api import TrainSample
from svc_trainer.deepspeed_config import ds_config
from svc_trainer.engine import check_samples
from svc_trainer.ranks import RankGroup

__all__ = ["DeepSpeedUnusable", "DeepSpeedTrainEngine", "check_record", "deepspeed_problems", "plan_step"]

INSTALL = "install it with DS_BUILD_OPS=0 pip install -c constraints.txt '.[deepspeed]' (see README, DeepSpeed)"


class DeepSpeedUnusable(RuntimeError):
    """This trainer cannot run the DeepSpeed run: DeepSpeed missing, a config file it cannot use,
    more ranks than GPUs (deepspeed_problems)."""


Plan = list[list[list[TrainSample]]]  # per minibatch, per micro-batch: one rank's samples


def deepspeed_problems(spec: RunSpec, ranks: int) -> list[str]:
    """Why this trainer cannot run `spec` on DeepSpeed (empty: it can): DeepSpeed missing, a config
    file it cannot use, more ranks than GPUs."""
    problems = []
    try:
        import deepspeed  # noqa: F401
    except ImportError as exc:
        problems.append(f"train.engine deepspeed: DeepSpeed is not installed in the trainer ({exc}); {INSTALL}")
    try:
        ds_config(spec.train, ranks)
    except ValueError as exc:
        problems.append(str(exc))
    if torch.cuda.is_available() and ranks > torch.cuda.device_count():
        problems.append(
            f"train.deepspeed.ranks {ranks}: the trainer sees {torch.cuda.device_count()} GPU(s); "
            "lower it (or JETRL_TRAINER_RANKS)"
        )
    return problems


def plan_step(samples: Sequence[TrainSample], minibatches: int, world: int, micro_batch_size: int) -> list[Plan]:
    """Each rank's plan for one version: per minibatch (the torch engine's slices), its micro-batches.

    Samples go to ranks by tokens (prompt + completion), longest first to the least loaded rank;
    every rank gets as many micro-batches (some maybe empty) as the largest share needs.
    """
    slices = [idx.tolist() for idx in torch.arange(len(samples)).chunk(minibatches) if len(idx)]
    plans: list[Plan] = [[] for _ in range(world)]
    for rows in slices:
        shares: list[list[TrainSample]] = [[] for _ in range(world)]
        load = [0] * world
        size = lambda s: len(s.prompt_token_ids) + len(s.completion_token_ids)  # noqa: E731
        for i in sorted(rows, key=lambda i: -size(samples[i])):
            r = load.index(min(load))
            shares[r].append(samples[i])
            load[r] += size(samples[i])
        count = max(1, max(-(-len(s) // micro_batch_size) for s in shares))
        for r, share in enumerate(shares):
            plans[r].append([share[k * micro_batch_size : (k + 1) * micro_batch_size] for k in range(count)])
    return plans


def check_record(record: dict[str, Any], world: int) -> None:
    """Refuse a trainer-state record this engine cannot load on `world` ranks, saying what to do."""
    if "checkpoint" not in record:
        raise ValueError("the trainer state was written by another train engine than this run's")
    if record["ranks"] != world:
        raise ValueError(
            f"this run's ZeRO checkpoint was written by {record['ranks']} ranks and loads only on as many "
            f"(its AdamW state is sharded by rank); the trainer has {world}: "
            f"set JETRL_TRAINER_RANKS={record['ranks']}"
        )


class DeepSpeedTrainEngine:
    """A run's DeepSpeed ranks, driven from the trainer process (the TrainEngine protocol)."""

    def __init__(
        self,
        spec: RunSpec,
        exact: Path | None,
        checkpoints: Path,
        *,
        ranks: int,
        timeout_s: float,
        on_failure: Callable[[str], None] | None = None,
    ):
        if problems := deepspeed_problems(spec, ranks):
            raise DeepSpeedUnusable("; ".join(problems))
        from svc_trainer.deepspeed_rank import rank_main

        self.spec = spec
        self.world = ranks
        self.group = RankGroup(ranks, timeout_s, rank_main, on_failure=on_failure)
        try:
            self.group.call("open", spec, exact, checkpoints)
        except BaseException:
            self.group.close()
            raise

    def train_step(self, samples: Sequence[TrainSample], lr: float | None = None) -> dict[str, float]:
        check_samples(samples)
        ds = self.spec.train.deepspeed
        plans = plan_step(samples, self.spec.train.minibatches, self.world, ds.micro_batch_size)
        sizes = [sum(len(mb) for share in parts for mb in share) for parts in zip(*plans)]  # samples per minibatch
        rate = self.spec.train.lr if lr is None else lr
        return self.group.call("step", sizes, rate, each=plans)[0]  # every rank reduced the same metrics

    def save_weights(self, path: Path, dtype: torch.dtype | None, shard_bytes: int) -> Path:
        return self.group.call("save_weights", path, dtype, shard_bytes)[0]

    def save_state(self, version: int) -> dict[str, Any]:
        return self.group.call("save_state", version)[0]

    def load_state(self, record: dict[str, Any]) -> None:
        check_record(record, self.world)
        self.group.call("load_state", record)

    def close(self) -> None:
        self.group.close()
