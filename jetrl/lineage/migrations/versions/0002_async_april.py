"""async training and APRIL partial rollouts: partial buffer, sample segments, staleness per sample

Counters get server defaults so that rows written before this revision stay valid.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partial_samples",
        sa.Column("sample_id", sa.String(length=192), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("group_id", sa.String(length=160), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("token_ids", sa.ARRAY(sa.Integer()), nullable=False),
        sa.Column("logprobs", sa.ARRAY(sa.Float()), nullable=False),
        sa.Column("token_versions", sa.ARRAY(sa.Integer()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["prompt_groups.group_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sample_id", "attempt"),
    )
    op.create_index(op.f("ix_partial_samples_group_id"), "partial_samples", ["group_id"], unique=False)
    op.create_index(op.f("ix_partial_samples_run_id"), "partial_samples", ["run_id"], unique=False)
    op.create_table(
        "sample_segments",
        sa.Column("sample_id", sa.String(length=192), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("group_id", sa.String(length=160), nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=False),
        sa.Column("start", sa.Integer(), nullable=False),
        sa.Column("end", sa.Integer(), nullable=False),
        sa.Column("min_version", sa.Integer(), nullable=True),
        sa.Column("max_version", sa.Integer(), nullable=True),
        sa.Column("finish_reason", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["prompt_groups.group_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sample_id", "attempt"),
    )
    op.create_index(op.f("ix_sample_segments_group_id"), "sample_segments", ["group_id"], unique=False)
    op.create_index(op.f("ix_sample_segments_run_id"), "sample_segments", ["run_id"], unique=False)
    op.add_column("prompt_groups", sa.Column("attempt", sa.Integer(), server_default="0", nullable=False))
    op.add_column("prompt_groups", sa.Column("attempt_version", sa.Integer(), server_default="0", nullable=False))
    op.add_column("prompt_groups", sa.Column("recycled", sa.Integer(), server_default="0", nullable=False))
    op.alter_column("prompt_groups", "step", existing_type=sa.INTEGER(), nullable=True)
    op.add_column("samples", sa.Column("attempts", sa.Integer(), server_default="1", nullable=False))
    op.add_column("samples", sa.Column("regenerated", sa.Integer(), server_default="0", nullable=False))
    op.add_column("samples", sa.Column("staleness", sa.Integer(), nullable=True))
    op.add_column("samples", sa.Column("trained_tokens", sa.Integer(), nullable=True))
    op.add_column("samples", sa.Column("stale_masked_tokens", sa.Integer(), nullable=True))
    op.add_column("samples", sa.Column("offpolicy_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("samples", "offpolicy_tokens")
    op.drop_column("samples", "stale_masked_tokens")
    op.drop_column("samples", "trained_tokens")
    op.drop_column("samples", "staleness")
    op.drop_column("samples", "regenerated")
    op.drop_column("samples", "attempts")
    op.alter_column("prompt_groups", "step", existing_type=sa.INTEGER(), nullable=False)
    op.drop_column("prompt_groups", "recycled")
    op.drop_column("prompt_groups", "attempt_version")
    op.drop_column("prompt_groups", "attempt")
    op.drop_index(op.f("ix_sample_segments_run_id"), table_name="sample_segments")
    op.drop_index(op.f("ix_sample_segments_group_id"), table_name="sample_segments")
    op.drop_table("sample_segments")
    op.drop_index(op.f("ix_partial_samples_run_id"), table_name="partial_samples")
    op.drop_index(op.f("ix_partial_samples_group_id"), table_name="partial_samples")
    op.drop_table("partial_samples")
