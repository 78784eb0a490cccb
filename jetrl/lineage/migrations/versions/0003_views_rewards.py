"""views, reward composition and failures, prompt selection, the EMA teacher

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("samples", sa.Column("view", sa.String(length=16), server_default="main", nullable=False))
    op.add_column("prompts", sa.Column("analogous", sa.Text(), nullable=True))
    op.add_column("prompt_groups", sa.Column("problem", sa.Integer(), nullable=True))
    op.add_column("prompt_groups", sa.Column("reward_error", sa.Text(), nullable=True))
    op.add_column("runs", sa.Column("teacher_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "teacher_version")
    op.drop_column("prompt_groups", "reward_error")
    op.drop_column("prompt_groups", "problem")
    op.drop_column("prompts", "analogous")
    op.drop_column("samples", "view")
