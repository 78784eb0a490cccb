"""Lineage schema: one row per run, prompt, group, sample, reward, batch, version and evaluation.

Every key is deterministic (ids come from the events), so the recorder writes with
`INSERT ... ON CONFLICT` and a redelivered event changes nothing. The schema itself is created
and changed only by the Alembic migrations in `jetrl/lineage/migrations/`; a test checks that
the migrations and these models agree.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ARRAY,
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Base",
    "Run",
    "Prompt",
    "PromptGroup",
    "Sample",
    "SampleSegment",
    "PartialSample",
    "Reward",
    "Batch",
    "PolicyVersion",
    "Evaluation",
    "DeadLetter",
]


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class NumberArray(TypeDecorator):
    """An integer or float array column, written as Postgres's own array literal ('{1,2,3}') that
    Postgres parses, and read back as a list. psycopg dumps a list element by element in Python:
    the token arrays were a third of the client's time in `Samples.record_samples`."""

    impl = ARRAY
    cache_ok = True

    def __init__(self, item_type: type[Integer] | type[Float]):
        super().__init__(item_type)

    def bind_processor(self, dialect):
        # the literal replaces the list for the driver (the array type's own processing, which
        # would take a string for a list of characters, is skipped); SQLAlchemy casts the
        # parameter to the column's array type in the statement. repr is the shortest text that
        # reads back as the same float.
        def literal(value):
            return None if value is None else "{" + ",".join(map(repr, value)) + "}"

        return literal


class Base(DeclarativeBase):
    pass


class Run(Base):
    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    spec_yaml: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))  # jetrl.states.RunState
    message: Mapped[str] = mapped_column(Text, default="")
    policy_version: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer)
    batch_groups: Mapped[int] = mapped_column(Integer)
    group_size: Mapped[int] = mapped_column(Integer)
    trace_id: Mapped[str] = mapped_column(String(32), default="")
    teacher_version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the EMA teacher's newest
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Prompt(Base):
    __tablename__ = "prompts"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True)
    prompt_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    prompt: Mapped[str] = mapped_column(Text)
    reference: Mapped[str] = mapped_column(Text)
    analogous: Mapped[str | None] = mapped_column(Text, nullable=True)  # the rephrased view, when sampled


class PromptGroup(Base):
    __tablename__ = "prompt_groups"
    # every lookup names the run and, but for a few, a state (admission's counts, sealing, resuming),
    # and takes a state's groups in admission order or its newest one (the next group's number)
    __table_args__ = (Index("ix_prompt_groups_run_id_state_n", "run_id", "state", "n"),)
    group_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"))
    n: Mapped[int] = mapped_column(Integer)  # admission order within the run
    problem: Mapped[int | None] = mapped_column(Integer, nullable=True)  # task problem index; None: n
    prompt_id: Mapped[str] = mapped_column(String(128))
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the batch it joined, once sealed
    admitted_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # current task attempt
    attempt_version: Mapped[int] = mapped_column(Integer, default=0)  # version current when it (re)started
    recycled: Mapped[int] = mapped_column(Integer, default=0)  # times aborted and resumed (APRIL)
    view: Mapped[str] = mapped_column(String(64), default="main")
    batch_id: Mapped[str | None] = mapped_column(String(160), nullable=True, index=True)
    reward_server: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reward_error: Mapped[str | None] = mapped_column(Text, nullable=True)  # endpoints that failed, and why
    traceparent: Mapped[str] = mapped_column(String(64), default="")
    trace_id: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = _now()


class _AttemptKey:
    """The key of one attempt at a sample (its segment, its partial), with the sample's run and group."""

    sample_id: Mapped[str] = mapped_column(String(192), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"), index=True)
    group_id: Mapped[str] = mapped_column(ForeignKey("prompt_groups.group_id", ondelete="CASCADE"), index=True)


class Sample(Base):
    __tablename__ = "samples"
    # a version's samples (version_points, run progress), without reading the whole run's; and a
    # run's, by its leading column (each index costs an entry on each of a sample's four writes)
    __table_args__ = (Index("ix_samples_run_id_trained_version", "run_id", "trained_version"),)
    sample_id: Mapped[str] = mapped_column(String(192), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"))
    group_id: Mapped[str] = mapped_column(ForeignKey("prompt_groups.group_id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    view: Mapped[str] = mapped_column(String(16), default="main")  # jetrl.views
    prompt_token_ids: Mapped[list[int]] = mapped_column(NumberArray(Integer))
    completion_token_ids: Mapped[list[int]] = mapped_column(NumberArray(Integer))
    logprobs: Mapped[list[float]] = mapped_column(NumberArray(Float))  # behaviour log-probs
    token_versions: Mapped[list[int]] = mapped_column(NumberArray(Integer))
    min_version: Mapped[int] = mapped_column(Integer)  # oldest version that generated a token
    max_version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    finish_reason: Mapped[str] = mapped_column(String(16))
    worker_id: Mapped[str] = mapped_column(String(128))
    reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    advantage: Mapped[float | None] = mapped_column(Float, nullable=True)
    trained_version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the version it made
    batch_id: Mapped[str | None] = mapped_column(String(160), nullable=True, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=1)  # task attempts that generated its tokens
    regenerated: Mapped[int] = mapped_column(Integer, default=0)  # stale prefixes dropped and generated again
    # completion tokens from attempts before its group's last (APRIL): the prefix a resumed attempt
    # was given, or the whole of a sample finished before its group was aborted and resumed
    prefix_len: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    staleness: Mapped[int | None] = mapped_column(Integer, nullable=True)  # max over trained tokens
    trained_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    stale_masked_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)  # too old: not trained
    offpolicy_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)  # trained, older version
    trace_id: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = _now()


class SampleSegment(_AttemptKey, Base):
    """One attempt's stretch of a sample: which worker generated tokens [start, end), with which versions."""

    __tablename__ = "sample_segments"
    worker_id: Mapped[str] = mapped_column(String(128))
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    min_version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: no token in this stretch
    max_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    finish_reason: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = _now()


class PartialSample(_AttemptKey, Base):
    """APRIL's partial buffer: a sample's completion so far when its attempt was aborted."""

    __tablename__ = "partial_samples"
    index: Mapped[int] = mapped_column(Integer)
    token_ids: Mapped[list[int]] = mapped_column(NumberArray(Integer))
    logprobs: Mapped[list[float]] = mapped_column(NumberArray(Float))
    token_versions: Mapped[list[int]] = mapped_column(NumberArray(Integer))
    created_at: Mapped[datetime] = _now()


class Reward(Base):
    """How one reward server scored one sample (a run may combine several servers)."""

    __tablename__ = "rewards"
    sample_id: Mapped[str] = mapped_column(ForeignKey("samples.sample_id", ondelete="CASCADE"), primary_key=True)
    server: Mapped[str] = mapped_column(String(128), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(256), default="")
    reward: Mapped[float] = mapped_column(Float)
    extracted_answer: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    trace_id: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = _now()


class Batch(Base):
    __tablename__ = "batches"
    batch_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    policy_version: Mapped[int] = mapped_column(Integer)
    trace_id: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = _now()


class PolicyVersion(Base):
    __tablename__ = "policy_versions"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_version: Mapped[int] = mapped_column(Integer)
    batch_id: Mapped[str] = mapped_column(String(160))
    uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict] = mapped_column(JSON)
    samples_trained_total: Mapped[int] = mapped_column(BigInteger)
    trace_id: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = _now()


class Evaluation(Base):
    __tablename__ = "evaluations"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    correct: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = _now()


class DeadLetter(Base):
    __tablename__ = "dead_letters"
    dlq_id: Mapped[str] = mapped_column(String(160), primary_key=True)  # jetrl.ids.dead_letter_id
    run_id: Mapped[str] = mapped_column(String(128), index=True)  # no FK: the run may be unknown
    subject: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now()
