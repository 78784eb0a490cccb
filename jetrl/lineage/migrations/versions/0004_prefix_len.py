"""samples.prefix_len: how many completion tokens a sample recycled from earlier attempts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("samples", sa.Column("prefix_len", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("samples", "prefix_len")
