"""indexes for the reads made on every version: a batch's groups and samples, a version's samples

Without them `load_batch`, the run's progress (mean reward of the last batch) and
`version_points` scanned every sample of the database, or of the run, once per version or twice a
second: 20-30 ms each in a 6,000-sample run, growing with the lineage kept.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_prompt_groups_batch_id", "prompt_groups", ["batch_id"])
    op.create_index("ix_samples_batch_id", "samples", ["batch_id"])
    op.create_index("ix_samples_run_id_trained_version", "samples", ["run_id", "trained_version"])


def downgrade() -> None:
    op.drop_index("ix_samples_run_id_trained_version", "samples")
    op.drop_index("ix_samples_batch_id", "samples")
    op.drop_index("ix_prompt_groups_batch_id", "prompt_groups")
