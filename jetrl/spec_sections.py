"""The sections of a run spec (jetrl.config.RunSpec): each field with its bounds and meaning.

A section validates its own fields; the checks across sections are RunSpec's.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "SpecModel",
    "ModelSpec",
    "TaskSpec",
    "VllmSpec",
    "RolloutSpec",
    "TrainSpec",
    "RewardEndpoint",
    "RewardSpec",
    "ScheduleSpec",
    "TeacherSpec",
    "SimulationSpec",
    "WandbSpec",
    "MetricsSpec",
]


EXPANDED = "JETRL_DATA_DIR"  # the one variable a run spec's paths may name
_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})")


def expand_path(path: str) -> str:
    """`~` and `$JETRL_DATA_DIR` (or `${JETRL_DATA_DIR}`) expanded where the spec is read. Any other
    `$NAME` is refused without being read: a spec is untrusted input, and an error that echoed a
    path would echo the variable's value (a token, a database URL)."""
    for match in _VARIABLE.finditer(path):
        if match.group(1).strip("{}") != EXPANDED:
            raise ValueError(
                f"{match.group(0)}: a run spec's paths may name only ${EXPANDED} (the services' data directory); "
                "write the rest of the path out"
            )
    return os.path.expandvars(os.path.expanduser(path))  # only $JETRL_DATA_DIR is left to expand


class SpecModel(BaseModel):
    """The base of every part of a run spec: unknown fields refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(SpecModel):
    path: str = Field(min_length=1)
    """Local directory of a Hugging Face causal LM (config, weights, tokenizer); `~` and
    `$JETRL_DATA_DIR` are expanded (expand_path)."""

    @field_validator("path")
    @classmethod
    def _expand(cls, v: str) -> str:
        return expand_path(v)


class TaskSpec(SpecModel):
    name: Literal["arithmetic", "gsm8k"] = "arithmetic"
    """Prompt source: the synthetic arithmetic task, or a GSM8K-format JSONL file."""
    path: str | None = None
    """JSONL file for file-based tasks (`question`, `answer` with a `#### n` line); `~` and
    `$JETRL_DATA_DIR` are expanded."""
    digits: int = Field(2, ge=1, le=6)
    """Arithmetic: digits per operand."""
    terms: int = Field(2, ge=2, le=6)
    """Arithmetic: operands per problem (2 = `a+b=`, more = a chain)."""
    heldout_size: int = Field(200, ge=1, le=100_000)
    """Problems in the fixed held-out evaluation set (never trained on)."""
    seed: int = Field(0, ge=0)
    """Seed of the task's data (held-out set and training prompts)."""
    chat_template: bool = False
    """Give each prompt as the user's turn of the model's chat template, the assistant's turn
    opened (instruction-tuned models; the model directory must ship a template)."""
    rephrase: Literal["order", "words"] = "order"
    """Arithmetic's analogous view: the terms in another order (`7-5+12=` for `12+7-5=`), or the
    expression in words (`12 plus 7 minus 5 =`)."""
    rephrase_field: str = Field("rephrased_question", min_length=1, max_length=128)
    """File tasks: the column holding each question's analogous rephrasing (Co-Reward's view q')."""
    rephrase_path: str | None = None
    """File tasks: a JSONL file of rephrasings instead of a column, line i rephrasing line i of
    `path` (`question` field). Arithmetic makes its own (operand order, wording)."""

    @field_validator("path", "rephrase_path")
    @classmethod
    def _expand(cls, v: str | None) -> str | None:
        return expand_path(v) if v else v

    @model_validator(mode="after")
    def _needs_path(self) -> TaskSpec:
        if self.name == "gsm8k" and not self.path:
            raise ValueError("task 'gsm8k' needs `path` to a JSONL file")
        return self


class VllmSpec(SpecModel):
    """vLLM's own settings, used when `rollout.engine` is `vllm` (svc_rollout/vllm_engine.py)."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights and activations; `auto` takes the model's config (the trainer publishes weights in it)."""
    max_model_len: int | None = Field(None, ge=16, le=1_048_576)
    """Prompt + completion tokens per sequence; unset: the model's own maximum."""
    memory_fraction: float = Field(0.3, gt=0.0, le=0.95)
    """Share of the device's memory vLLM may take for weights and KV cache (vLLM's
    gpu_memory_utilization; on the CPU backend, of the NUMA node's memory)."""
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    """Devices one engine shards the model over."""
    enforce_eager: bool = True
    """No CUDA graphs or torch.compile: starts in seconds instead of minutes (turn off for
    long runs on GPUs, where graphs pay)."""
    max_num_seqs: int = Field(256, ge=1, le=65_536)
    """Sequences decoded in one step (continuous batching)."""


class RolloutSpec(SpecModel):
    engine: Literal["torch", "vllm"] = "torch"
    """Generation engine of the rollout workers: jetrl's torch loop, or vLLM (scripts/setup_vllm.sh
    installs it; settings in `vllm`)."""
    vllm: VllmSpec = VllmSpec()
    """vLLM's settings (engine `vllm` only)."""
    group_size: int = Field(8, ge=1, le=1024)
    """G: completions sampled per prompt."""
    temperature: float = Field(1.0, ge=0.0, le=4.0)
    """Sampling temperature of the behaviour policy (0 = greedy)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    max_new_tokens: int = Field(8, ge=1, le=32_768)
    """Completion length cap (of the whole completion, across resumed attempts)."""
    on_new_weights: Literal["interrupt", "finish"] = "interrupt"
    """When a new version arrives mid-generation: switch at the next token boundary (AReaL's
    interruptible generation), or finish in-flight samples on the old weights first."""
    analogous_view: bool = False
    """Also sample the task's analogous rephrasing of every prompt (view "analogous", G samples,
    trained like the main view, advantages per view). `co_reward` needs it."""


class DeepSpeedSpec(SpecModel):
    """DeepSpeed ZeRO's settings, used when `train.engine` is `deepspeed` (svc_trainer/deepspeed_engine.py,
    docs/engines.md). The optimizer (AdamW: train.lr, weight_decay), gradient clipping (train.grad_clip)
    and batch sizes stay jetrl's; everything else DeepSpeed reads may come from `config_file`."""

    ranks: int = Field(1, ge=1, le=1024)
    """Data-parallel ranks: processes the trainer starts for the run, joined by torch.distributed
    (NCCL, one GPU each, on CUDA; gloo on CPU). JETRL_TRAINER_RANKS overrides it for one trainer."""
    zero_stage: Literal[1, 2, 3] = 2
    """What ZeRO partitions across ranks: 1 the optimizer state, 2 also the gradients, 3 also the
    parameters (gathered for each forward, and for publication)."""
    offload_optimizer: bool = False
    """Keep the optimizer state in CPU memory and step it there (ZeRO-Offload)."""
    offload_params: bool = False
    """Keep the parameters in CPU memory between uses (ZeRO-Infinity; stage 3 only)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Weights, activations and gradients in float32, or in bfloat16 with a float32 master copy."""
    micro_batch_size: int = Field(16, ge=1, le=65_536)
    """Samples a rank runs forward and backward at once. A rank's share of a minibatch is split into
    as many micro-batches as the largest share needs, gradients accumulating across them (gradient
    accumulation), so every rank makes the same calls and memory stays bounded."""
    config_file: str | None = Field(None, min_length=1)
    """A DeepSpeed JSON config on the trainer's disk, merged under these settings: it may set
    anything they do not (bucket sizes, communication dtype, ...); a key they or train.* set is
    refused, not overridden."""

    @model_validator(mode="after")
    def _offload_params_needs_stage_3(self) -> DeepSpeedSpec:
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params partitions the parameters: set zero_stage: 3 (or offload_params: false)")
        return self


class TrainSpec(SpecModel):
    engine: Literal["torch", "deepspeed"] = "torch"
    """Train engine: jetrl's torch loop in the trainer process, or DeepSpeed ZeRO across
    `deepspeed.ranks` processes (pip install '.[deepspeed]'; settings in `deepspeed`)."""
    deepspeed: DeepSpeedSpec = DeepSpeedSpec()
    """DeepSpeed's settings (engine `deepspeed` only)."""
    steps: int = Field(30, ge=1, le=1_000_000)
    """Optimizer steps, i.e. policy versions to publish."""
    batch_groups: int = Field(16, ge=1, le=100_000)
    """B: prompt groups per training batch."""
    lr: float = Field(1e-4, gt=0.0, le=1.0)
    """AdamW peak learning rate (the rate of every version with lr_schedule constant and no warm-up)."""
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """The rate after warm-up, per policy version: constant, or decaying linearly or along a cosine
    to min_lr_ratio × lr at the last version (svc_trainer/lr.py)."""
    lr_warmup_ratio: float = Field(0.0, ge=0.0, le=1.0)
    """Share of `steps` over which the rate climbs linearly from lr / warm-up versions to lr (the
    Co-rewarding scripts use 0.1 with a cosine)."""
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    """Where linear and cosine decay end, as a share of lr."""
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    """AdamW weight decay."""
    grad_clip: float = Field(1.0, gt=0.0, le=1e6)
    """Max global gradient norm."""
    clip_eps_low: float = Field(0.2, ge=0.0, le=1.0)
    """PPO ratio clip below 1 (ε_low)."""
    clip_eps_high: float = Field(0.2, ge=0.0, le=10.0)
    """PPO ratio clip above 1 (ε_high)."""
    behaviour_weight_cap: float = Field(5.0, gt=0.0)
    """Tokens whose w = exp(p - b) exceeds this are masked (docs/design.md §5)."""
    advantage: Literal["grpo", "dr_grpo", "rloo", "mc_grpo"] = "grpo"
    """Advantage estimator per prompt group; `mc_grpo` wants an odd rollout.group_size (G+1)."""
    dynamic_sampling: bool = False
    """Drop groups whose rewards are all equal (DAPO): they carry no signal. They are recorded
    (state "filtered"), never trained, and fresh groups take their place."""
    mc_scale: Literal["std", "mad"] = "std"
    """mc_grpo's scale: the group's std, or the median absolute deviation + 1e-3 (0 + 1e-3 for
    binary rewards whenever a majority agrees)."""
    loss_agg: Literal["token_mean", "constant"] = "token_mean"
    """Token-mean, or Dr.GRPO's constant normaliser (batch size × max_new_tokens)."""
    kl_coef: float = Field(0.0, ge=0.0, le=10.0)
    """β of the KL anchor to a reference policy in the loss (0: none, and no reference is kept)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """How the KL is estimated per token (svc_trainer/kl.py); k3 is verl's `low_var_kl`."""
    kl_reference: Literal["initial", "teacher"] = "initial"
    """The reference: the run's starting model, or the EMA teacher (Co-rewarding-II; needs `teacher`)."""
    kl_in: Literal["loss", "reward"] = "loss"
    """Where β · KL goes: into every token's loss (TRL's `beta`, verl's `use_kl_loss`), or off each
    sample's reward before advantages, β times the sum of k over its completion tokens with the
    behaviour log-probs as the policy's (verl's `use_kl_in_reward`, OpenRLHF's `init_kl_coef`)."""
    weights_shard_mb: int = Field(4096, ge=1, le=1_000_000)
    """A version bigger than this is published as shards of at most this size and an index."""
    keep_last_versions: int = Field(0, ge=0, le=1_000_000)
    """Per-version weight files the trainer keeps on disk: the newest K (0: every version). At
    least 2, so a rollout worker still reading the previous version finds it."""
    keep_every_versions: int = Field(0, ge=0, le=1_000_000)
    """And every N-th version besides (0: none), e.g. to export later (`jetrl export`)."""
    minibatches: int = Field(1, ge=1, le=1024)
    """Optimizer steps per version, each on a slice of the batch; proximal log-probs are taken
    once before the first, so with more than one the PPO clip binds."""

    @field_validator("keep_last_versions")
    @classmethod
    def _keeps_two(cls, v: int) -> int:
        if v == 1:
            raise ValueError("keep 0 (every version) or at least 2: a rollout worker may still be reading the previous")
        return v


class RewardEndpoint(SpecModel):
    address: str = Field(min_length=3, pattern=r"^[^\s:]+:\d+$")
    """host:port of a RewardService (any implementation of protos/jetrl/v1/reward.proto)."""
    weight: float = Field(1.0, ge=-1e6, le=1e6)
    """A sample's reward is the weighted sum of every endpoint's reward for it."""


class RewardSpec(SpecModel):
    endpoints: tuple[RewardEndpoint, ...] = ()
    """The reward servers scoring every group, combined by weight; empty means the built-in
    `verify` server (JETRL_REWARD_ADDR). `endpoint: host:port` is short for one of weight 1."""
    deadline_s: float = Field(10.0, gt=0.0, le=3600.0)
    """Deadline of one Score call."""
    retries: int = Field(3, ge=0, le=100)
    """Retries (with backoff) after a failed or timed-out Score call."""
    on_failure: Literal["zero", "drop", "fail"] = "zero"
    """An endpoint that still fails after its retries: its share of the group's rewards is 0
    ("zero"), the group is dropped and replaced ("drop"), or the run fails ("fail"). Either way
    the group's lineage row names the failure and progress counts it."""
    max_dropped: int | None = Field(None, ge=1, le=1_000_000)
    """With `on_failure: drop`, fail the run once this many groups have been dropped, so a server
    that never comes back ends the run with its error instead of consuming generation forever.
    None: no limit (the run waits for the server, dropping and replacing groups)."""
    max_abs_reward: float = Field(100.0, gt=0.0, le=1e6)
    """The largest |reward| one endpoint may give a sample. A reply with a reward beyond it, or
    one that is not a finite number (NaN, inf), is a failed call under `on_failure`: a 1e30 reward
    makes the gradient infinite (with `dr_grpo`, which does not divide by the group's std)."""
    max_failed_share: float = Field(0.9, ge=0.0, le=1.0)
    """Fail the run, naming the endpoint and its error, once more than this share of the groups
    scored and kept (every scored group but those `drop` dropped, which are never trained) had a
    failed endpoint; judged from `train.batch_groups` scored groups on. So a run whose server
    fails on (nearly) every call ends FAILED instead of training on zeros, while one whose server
    was down for a while and came back goes on: the default leaves room for an outage several
    times as long as the good stretch before it (at 0.5, a 16-group run whose server was killed
    after its first version and restarted failed in 4 tries of 6). Lower it to also stop a server
    that fails often; 1 turns the check off."""

    @model_validator(mode="before")
    @classmethod
    def _one_endpoint(cls, raw):
        if isinstance(raw, dict) and "endpoint" in raw:
            raw = dict(raw)
            one = raw.pop("endpoint")
            if one and raw.get("endpoints"):
                raise ValueError("give either `endpoint` or `endpoints`, not both")
            if one:
                raw["endpoints"] = [{"address": one}]
        return raw

    @model_validator(mode="after")
    def _drop_limit(self) -> RewardSpec:
        if self.max_dropped is not None and self.on_failure != "drop":
            raise ValueError(
                f"reward.max_dropped limits dropped groups; it needs on_failure: drop, not {self.on_failure}"
            )
        return self

    @model_validator(mode="after")
    def _distinct(self) -> RewardSpec:
        addresses = [e.address for e in self.endpoints]
        if len(set(addresses)) != len(addresses):
            raise ValueError("reward.endpoints names an address twice; give it one weight")
        return self


class ScheduleSpec(SpecModel):
    max_staleness: int = Field(0, ge=0, le=1000)
    """η: versions a trained token may lag the trainer (0 = synchronous). Tokens older than this
    are never trained: the trainer masks them, whatever else happened."""
    max_concurrent: int = Field(64, ge=1, le=1_000_000)
    """Groups in flight at most."""
    over_provision: float = Field(1.0, ge=1.0, le=16.0)
    """ρ (APRIL): keep up to ρ times the groups the next batch still needs in flight (and never
    fewer than the open batches need, η > 0); once they are complete the rest are aborted and
    their partial samples resumed first next time (1 = off)."""
    recycled_staleness: int | None = Field(None, ge=0, le=1000)
    """Versions a token of a recycled (APRIL) prefix may lag and still be trained, under the
    decoupled correction; None = η. APRIL's own practice with a synchronous loop (η = 0) is 1: a
    group aborted at version v is finished at v + 1 and trained whole. At least η, and only with
    over_provision > 1 (nothing is recycled otherwise)."""
    stale_partials: Literal["mask", "regenerate"] = "mask"
    """A resumed partial sample whose oldest token is already older than the recycled bound
    (recycled_staleness, else η): keep it and mask the stale prefix in the loss, or drop the prefix
    and generate the sample again."""
    eval_every: int = Field(5, ge=0, le=1_000_000)
    """Held-out evaluation of version 0, of every this many versions, and of the last; 0 = of
    version 0 and the last only."""
    prompt_selection: Literal["uniform", "thompson"] = "uniform"
    """Which training prompt each new group gets: the task's own stream, or Thompson sampling
    over a pool of `prompt_pool` prompts preferring those solved about half the time
    (svc_scheduler/selection.py)."""
    prompt_pool: int = Field(512, ge=2, le=1_000_000)
    """Thompson sampling: the training prompts it chooses among (the task's first N)."""
    thompson_decay: float = Field(0.9, gt=0.0, le=1.0)
    """Thompson sampling: per policy version, evidence about a prompt keeps this share of its
    weight, so the posterior drifts back toward the Beta(1, 1) prior as the policy changes."""

    @model_validator(mode="after")
    def _recycled_bound(self) -> ScheduleSpec:
        if self.recycled_staleness is not None:
            if self.recycled_staleness < self.max_staleness:
                raise ValueError(
                    f"schedule.recycled_staleness ({self.recycled_staleness}) must be at least "
                    f"max_staleness ({self.max_staleness}): a recycled token may lag as much as any other"
                )
            if self.over_provision <= 1:
                raise ValueError("schedule.recycled_staleness needs over_provision > 1 (APRIL): nothing is recycled")
        return self

    @property
    def recycled_bound(self) -> int:
        """Versions a recycled prefix token may lag and be trained: recycled_staleness, else η."""
        return self.max_staleness if self.recycled_staleness is None else self.recycled_staleness


class TeacherSpec(SpecModel):
    """Co-rewarding-II's teacher: an EMA of the policy, published as a second weight stream and
    sampled for the `teacher` reward server's pseudo-labels (never trained on)."""

    samples: int = Field(4, ge=1, le=1024)
    """G~: teacher samples of each question."""
    ema_start: float = Field(0.99, ge=0.0, lt=1.0)
    """EMA rate m at step 0: teacher <- m * teacher + (1 - m) * policy after every step. The
    defaults are Co-rewarding-II's script's (α = 1 − m from 0.01 to 1e-5): a teacher that barely
    moves, and so a steady reference for the KL anchor (`train.kl_reference: teacher`)."""
    ema_end: float = Field(0.99999, ge=0.0, le=1.0)
    """EMA rate at the last step; m follows a cosine from ema_start to ema_end, so the teacher
    follows the policy most (if still slowly) early on and all but stops by the end."""
    update_every: int = Field(1, ge=1, le=100_000)
    """Versions between the teacher's updates (the Co-rewarding authors' `update_interval`): it
    moves only at versions that are multiples of this, at the schedule's rate there, and stays as
    it is in between; their script updates it after every step, as the default does."""
    temperature: float = Field(1.0, ge=0.0, le=4.0)
    """Sampling temperature of the teacher's samples."""


class SimulationSpec(SpecModel):
    """Simulated hardware (benchmarks only): engines that spend modelled time instead of
    computing. Decode is memory-bound, so one decode step costs the same for any batch up to
    `capacity` sequences; completion lengths are lognormal, capped at `max_length`."""

    decode_step_s: float = Field(0.005, gt=0.0, le=10.0)
    """Seconds per decode step of the whole running batch."""
    capacity: int = Field(256, ge=1, le=1_000_000)
    """Sequences decoded together at most; the rest wait their turn."""
    length_median: float = Field(40.0, gt=0.0, le=1e6)
    """Median completion length in tokens (exp(μ) of the lognormal)."""
    length_sigma: float = Field(1.0, ge=0.0, le=5.0)
    """σ of the lognormal completion length: the long tail."""
    max_length: int = Field(512, ge=1, le=1_000_000)
    """Length cap; must not exceed rollout.max_new_tokens."""
    train_s_per_token: float = Field(0.0005, ge=0.0, le=10.0)
    """Trainer seconds per completion token of a batch."""
    train_s_per_step: float = Field(0.0, ge=0.0, le=3600.0)
    """Fixed trainer seconds per optimizer step."""


class WandbSpec(SpecModel):
    """A Weights & Biases run for the jetrl run, named by its id (the `wandb` extra:
    `pip install 'jetrl[wandb]'` where the scheduler runs); its config is the run spec."""

    project: str = Field("jetrl", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    """W&B project."""
    entity: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    """W&B team or user; None: the API key's default."""
    mode: Literal["offline", "online"] = "offline"
    """offline: a run directory under `$JETRL_DATA_DIR/wandb/`, written without network or key,
    uploaded later by `wandb sync`; online: streamed to W&B with the scheduler's WANDB_API_KEY."""


class MetricsSpec(SpecModel):
    """Where each recorded version's training metrics go besides lineage (svc_scheduler/run_metrics.py):
    the trainer's (loss, kl, lr, clip fraction, ...), the mean reward and staleness of the samples
    that trained it, samples/s, and held-out accuracy when evaluated; one point per version."""

    tensorboard: bool = True
    """TensorBoard event files under `$JETRL_DATA_DIR/tensorboard/<run id>/`, written by the
    scheduler (`tensorboard --logdir $JETRL_DATA_DIR/tensorboard`). On by default: a few hundred
    bytes per version, and the curves are where users look first."""
    wandb: WandbSpec | None = None
    """When set, the same points go to Weights & Biases too."""
    warn_answer_share: float | None = Field(0.5, gt=0.0, le=1.0)
    """Collapse warning (progress, `jetrl run`, `jetrl watch`, the scheduler's log) when the most
    common extracted answer takes more than this share of a version's trained samples: label-free
    rewards that collapse pile onto one constant answer (74-86% in docs/rewards.md's runs), while a
    task's questions have many answers. None: never."""
    warn_entropy: float | None = Field(None, ge=0.0, le=100.0)
    """Collapse warning when the policy's mean token entropy over a version's trained tokens (its
    `entropy` metric, nats) falls below this. None (the default): never, since a policy that has
    learnt a task is sure of its answers too."""
