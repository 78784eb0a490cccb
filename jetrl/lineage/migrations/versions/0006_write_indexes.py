"""fewer indexes to keep on the rows a run writes most: samples and prompt groups

Every sample row is written four times (recorded, rewarded, batched, trained) and every group row
five; none of those updates can be HOT, so each writes an entry in every index of its table.
`ix_samples_run_id` repeats the leading column of `ix_samples_run_id_trained_version`, and the
group lookups all name the run and a state: one (run_id, state) index serves them where
`ix_prompt_groups_run_id` and `ix_prompt_groups_state` (a handful of distinct values over every
run) were two.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_prompt_groups_run_id_state", "prompt_groups", ["run_id", "state"])
    op.drop_index("ix_prompt_groups_state", "prompt_groups")
    op.drop_index("ix_prompt_groups_run_id", "prompt_groups")
    op.drop_index("ix_samples_run_id", "samples")


def downgrade() -> None:
    op.create_index("ix_samples_run_id", "samples", ["run_id"])
    op.create_index("ix_prompt_groups_run_id", "prompt_groups", ["run_id"])
    op.create_index("ix_prompt_groups_state", "prompt_groups", ["state"])
    op.drop_index("ix_prompt_groups_run_id_state", "prompt_groups")
