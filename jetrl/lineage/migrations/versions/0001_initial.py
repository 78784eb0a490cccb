"""initial lineage schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("dlq_id", sa.String(length=160), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("dlq_id"),
    )
    op.create_index(op.f("ix_dead_letters_run_id"), "dead_letters", ["run_id"], unique=False)
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("spec_yaml", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("total_steps", sa.Integer(), nullable=False),
        sa.Column("batch_groups", sa.Integer(), nullable=False),
        sa.Column("group_size", sa.Integer(), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_table(
        "batches",
        sa.Column("batch_id", sa.String(length=160), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("batch_id"),
    )
    op.create_index(op.f("ix_batches_run_id"), "batches", ["run_id"], unique=False)
    op.create_table(
        "evaluations",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("correct", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "version"),
    )
    op.create_table(
        "policy_versions",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("parent_version", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.String(length=160), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("samples_trained_total", sa.BigInteger(), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "version"),
    )
    op.create_table(
        "prompt_groups",
        sa.Column("group_id", sa.String(length=160), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.String(length=128), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("admitted_version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("view", sa.String(length=64), nullable=False),
        sa.Column("batch_id", sa.String(length=160), nullable=True),
        sa.Column("reward_server", sa.String(length=128), nullable=True),
        sa.Column("traceparent", sa.String(length=64), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id"),
    )
    op.create_index(op.f("ix_prompt_groups_run_id"), "prompt_groups", ["run_id"], unique=False)
    op.create_index(op.f("ix_prompt_groups_state"), "prompt_groups", ["state"], unique=False)
    op.create_table(
        "prompts",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("prompt_id", sa.String(length=128), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "prompt_id"),
    )
    op.create_table(
        "samples",
        sa.Column("sample_id", sa.String(length=192), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("group_id", sa.String(length=160), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("prompt_token_ids", sa.ARRAY(sa.Integer()), nullable=False),
        sa.Column("completion_token_ids", sa.ARRAY(sa.Integer()), nullable=False),
        sa.Column("logprobs", sa.ARRAY(sa.Float()), nullable=False),
        sa.Column("token_versions", sa.ARRAY(sa.Integer()), nullable=False),
        sa.Column("min_version", sa.Integer(), nullable=False),
        sa.Column("max_version", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("finish_reason", sa.String(length=16), nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=False),
        sa.Column("reward", sa.Float(), nullable=True),
        sa.Column("advantage", sa.Float(), nullable=True),
        sa.Column("trained_version", sa.Integer(), nullable=True),
        sa.Column("batch_id", sa.String(length=160), nullable=True),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["prompt_groups.group_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sample_id"),
    )
    op.create_index(op.f("ix_samples_group_id"), "samples", ["group_id"], unique=False)
    op.create_index(op.f("ix_samples_run_id"), "samples", ["run_id"], unique=False)
    op.create_table(
        "rewards",
        sa.Column("sample_id", sa.String(length=192), nullable=False),
        sa.Column("server", sa.String(length=128), nullable=False),
        sa.Column("endpoint", sa.String(length=256), nullable=False),
        sa.Column("reward", sa.Float(), nullable=False),
        sa.Column("extracted_answer", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["sample_id"], ["samples.sample_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sample_id", "server"),
    )


def downgrade() -> None:
    op.drop_table("rewards")
    op.drop_index(op.f("ix_samples_run_id"), table_name="samples")
    op.drop_index(op.f("ix_samples_group_id"), table_name="samples")
    op.drop_table("samples")
    op.drop_table("prompts")
    op.drop_index(op.f("ix_prompt_groups_state"), table_name="prompt_groups")
    op.drop_index(op.f("ix_prompt_groups_run_id"), table_name="prompt_groups")
    op.drop_table("prompt_groups")
    op.drop_table("policy_versions")
    op.drop_table("evaluations")
    op.drop_index(op.f("ix_batches_run_id"), table_name="batches")
    op.drop_table("batches")
    op.drop_table("runs")
    op.drop_index(op.f("ix_dead_letters_run_id"), table_name="dead_letters")
    op.drop_table("dead_letters")
