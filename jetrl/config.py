"""Typed configuration: process settings from the environment and the run spec from YAML (its
sections, one per part of a run, in jetrl/spec_sections.py).

Both are validated at the edge: a service refuses to start on bad settings, the scheduler
refuses a bad run spec (INVALID_ARGUMENT) before anything is published.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jetrl import ports
from jetrl.spec_sections import (
    MetricsSpec,
    ModelSpec,
    RewardSpec,
    RolloutSpec,
    ScheduleSpec,
    SimulationSpec,
    SpecModel,
    TaskSpec,
    TeacherSpec,
    TrainSpec,
)

__all__ = ["Settings", "RunSpec", "SpecError", "load_spec", "parse_spec", "dump_spec"]


class Settings(BaseSettings):
    """Process settings, read from `JETRL_*` environment variables."""

    # hide_input_in_errors: a refused value may be a credential, and the error is logged
    model_config = SettingsConfigDict(env_prefix="JETRL_", extra="ignore", hide_input_in_errors=True)

    nats_url: str = Field("nats://127.0.0.1:4222", min_length=1)
    """NATS server URL(s), comma separated for a cluster."""
    nats_user: str | None = None
    """NATS user, with `nats_password`."""
    nats_password: str | None = None
    """NATS password."""
    nats_token: str | None = None
    """NATS token (instead of user/password)."""
    nats_tls_ca: Path | None = None
    """CA bundle that signs the NATS server certificate; enables TLS."""
    nats_tls_cert: Path | None = None
    """Client certificate for mutual TLS."""
    nats_tls_key: Path | None = None
    """Client key for mutual TLS."""
    stream_replicas: int = Field(1, ge=1, le=5)
    """JetStream replicas of every stream jetrl declares (jetrl/bus/topology.py; each durable
    consumer is declared with its stream's count): 1 on a single server (`jetrl up`, compose), 3 on a 3-node NATS
    cluster (deploy/k8s), where every stream survives the loss of one node. A stream that already
    exists is updated to it; when the server refuses (a single server asked for 3, or too few
    nodes up), the stream keeps its own count and the service logs a warning."""
    database_url: str = Field("postgresql+psycopg://postgres@127.0.0.1:5432/jetrl", min_length=1)
    """SQLAlchemy URL of the lineage database (psycopg 3 driver)."""
    data_dir: Path = Path(".jetrl")
    """Where checkpoints, weights, logs and pid files live; shared by services on one host or volume."""
    listen: str | None = None
    """host:port this service's gRPC server binds; default 127.0.0.1 (this host only) on the port
    of its own address setting (the scheduler's of `scheduler_addr`, ...), a reward server run
    alone on its port in jetrl/ports.py. Containers and pods set 0.0.0.0:<port>
    (docker-compose.yml), with `grpc_token` set: a server bound beyond loopback without one logs
    a warning at start."""
    metrics_port: int = Field(0, ge=0, le=65_535)
    """Port of this process's Prometheus endpoint (`/metrics`: jetrl/metrics.py), bound on the host
    of `listen` (127.0.0.1 without it); 0: no endpoint. docker-compose.yml gives each service its
    port of `METRICS` in jetrl/ports.py, which deploy/prometheus scrapes."""
    grpc_token: SecretStr | None = Field(None, min_length=16, max_length=4096)
    """Bearer token of jetrl's gRPC services: each server refuses any call without it
    (UNAUTHENTICATED; health checks and reflection excepted), each client sends it as
    `authorization: Bearer <token>`. Unset: the servers accept every caller (the local stack)."""
    grpc_reward_token: SecretStr | None = Field(None, min_length=16, max_length=4096)
    """Bearer token of the reward servers, apart from `grpc_token` because a run may name a
    third-party reward server, which must never hold the token that creates runs and reads
    weights: the built-in reward servers require it when set, and the reward stage, CreateRun's
    checks and `jetrl reward check` send it to every reward endpoint. Unset: none sent, none
    required."""
    grpc_tls_cert: Path | None = None
    """This service's gRPC server certificate chain (PEM), with `grpc_tls_key`: the server then
    speaks TLS only. Its names must cover the addresses clients use (`scheduler_addr`, ...)."""
    grpc_tls_key: Path | None = None
    """Private key (PEM) of `grpc_tls_cert`."""
    grpc_tls_ca: Path | None = None
    """CA bundle (PEM) that signs the gRPC servers' certificates: when set, every gRPC client of
    this process (services calling each other and the reward servers, the CLI, the health probe)
    uses TLS and trusts only it. One setting for all endpoints: a third-party reward server must
    then present a certificate this CA signed."""
    scheduler_addr: str = Field(f"127.0.0.1:{ports.SCHEDULER}", min_length=3)
    """Where SchedulerService answers (services fetch run specs from it)."""
    rollout_addr: str = Field(f"127.0.0.1:{ports.ROLLOUT}", min_length=3)
    """Where RolloutService answers (ad-hoc evaluation and generation; `jetrl status`)."""
    reward_addr: str = Field(f"127.0.0.1:{ports.REWARD}", min_length=3)
    """Where the built-in reward server answers (the default reward endpoint)."""
    trainer_addr: str = Field(f"127.0.0.1:{ports.TRAINER}", min_length=3)
    """Where TrainerService answers; announced with each weight version as the streaming source."""
    worker_id: str = Field(default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}", min_length=1)
    """Name of this replica in lineage and logs."""
    rollout_concurrency: int = Field(16, ge=1, le=4096)
    """Tasks (prompt groups) a rollout worker generates at once. Each engine batches them: the
    torch engine decodes the calls in flight as one batch (svc_rollout/coalesce.py), vLLM and the
    simulated engine schedule them their own way; one task is G samples."""
    reward_concurrency: int = Field(16, ge=1, le=1024)
    """Prompt groups the reward stage scores at once. Each waits on its servers' Score calls
    (up to (retries + 1) x deadline_s for one that hangs), so they overlap: a slow server costs
    the run about one deadline budget per this many groups, not one per group."""
    torch_threads: int = Field(0, ge=0, le=256)
    """torch intra-op threads of a rollout worker or trainer; 0 leaves torch's default."""
    trainer_ranks: int = Field(0, ge=0, le=1024)
    """Ranks a DeepSpeed run trains on in this trainer, overriding the run's train.deepspeed.ranks
    (0: the run's). A run resumes only on as many ranks as wrote its checkpoint (docs/engines.md)."""
    collective_timeout_s: float = Field(300.0, ge=5.0, le=86_400.0)
    """Longest a DeepSpeed rank waits in one collective, and the trainer for a sign of progress
    from a rank (a reply, or its heartbeat after each forward), before the trainer gives up,
    reports NOT_SERVING and exits to be restarted as a whole."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of the structured (JSON) logs on stderr."""
    jaeger_url: str = Field("http://127.0.0.1:16686", min_length=8, max_length=512, pattern=r"^https?://\S+$")
    """Base URL of the Jaeger UI where the stack's traces are (compose publishes it on :16686):
    `jetrl explain` links a sample's trace as `<jaeger_url>/trace/<trace id>`."""

    @field_validator("grpc_token", "grpc_reward_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # compose passes `${JETRL_GRPC_TOKEN:-}`: an empty variable means no token, not a short one
        return None if value == "" else value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.grpc_tls_cert is None) != (self.grpc_tls_key is None):
            raise ValueError("set grpc_tls_cert and grpc_tls_key together (the server's certificate and its key)")
        return self

    def listen_or(self, default_port: int) -> str:
        return self.listen or f"127.0.0.1:{default_port}"

    def listen_as(self, address: str) -> str:
        """Where a service binds: `listen`, else every interface on the port of `address`, the
        setting others reach it by."""
        return self.listen_or(ports.port_of(address))


# ---- run spec: its sections are in jetrl/spec_sections.py ------------------------------------


class RunSpec(SpecModel):
    name: str = Field("run", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    """Human name; run ids start with it."""
    seed: int = Field(0, ge=0)
    """Seed of prompt order and sampling."""
    model: ModelSpec
    task: TaskSpec = TaskSpec()
    rollout: RolloutSpec = RolloutSpec()
    train: TrainSpec = TrainSpec()
    reward: RewardSpec = RewardSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    teacher: TeacherSpec | None = None
    """When set, the trainer keeps an EMA teacher and every group also gets G~ teacher samples."""
    simulation: SimulationSpec | None = None
    """When set, rollout workers and the trainer run the simulated-hardware engines (benchmarks)."""
    metrics: MetricsSpec = MetricsSpec()
    """Where each version's training metrics are written (TensorBoard, W&B) besides lineage."""

    @model_validator(mode="after")
    def _simulation_fits(self) -> RunSpec:
        if self.simulation is not None and self.simulation.max_length > self.rollout.max_new_tokens:
            raise ValueError("simulation.max_length must not exceed rollout.max_new_tokens")
        if self.train.dynamic_sampling and self.rollout.group_size < 2:
            raise ValueError(
                "train.dynamic_sampling drops groups whose rewards are all equal: "
                "with rollout.group_size 1 that is every group"
            )
        if (self.rollout.analogous_view or self.teacher) and self.schedule.over_provision > 1:
            raise ValueError(
                "schedule.over_provision > 1 (APRIL) works on single-view groups: "
                "turn off rollout.analogous_view and teacher, or set over_provision to 1"
            )
        if self.teacher and self.teacher.ema_end < self.teacher.ema_start:
            raise ValueError("teacher.ema_end must be at least teacher.ema_start (the teacher slows down)")
        if self.train.advantage == "mc_grpo" and (self.rollout.group_size % 2 == 0 or self.rollout.group_size < 3):
            raise ValueError(
                "train.advantage mc_grpo samples G+1 completions around a median pivot: "
                "set rollout.group_size to an odd number, at least 3 (1 would train nothing)"
            )
        if self.train.engine == "deepspeed" and self.simulation is not None:
            raise ValueError("`simulation` replaces the train engine: drop it or use train.engine torch")
        if self.train.engine == "deepspeed" and self.train.kl_coef and self.train.kl_reference == "teacher":
            raise ValueError(
                "train.kl_reference teacher is not supported with train.engine deepspeed: "
                "use kl_reference: initial, or the torch engine"
            )
        if self.train.kl_coef and self.train.kl_reference == "teacher" and self.teacher is None:
            raise ValueError("train.kl_reference teacher needs a `teacher:` section (or kl_reference: initial)")
        return self


class SpecError(ValueError):
    """A run spec that cannot run; the message lists every problem."""


def parse_spec(text: str) -> RunSpec:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"run spec is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError("run spec must be a YAML mapping")
    try:
        return RunSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise SpecError(f"invalid run spec: {problems}") from None


def load_spec(path: str | Path) -> RunSpec:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"run spec {p} does not exist")
    return parse_spec(p.read_text())


def dump_spec(spec: RunSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
