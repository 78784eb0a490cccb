"""a run's groups indexed by state and number: admission reads the next group number without
counting the run's groups, sealing takes a state's oldest groups in index order

Admission numbered new groups from the count of every group the run had had (a GROUP BY over all
of them, 20 ms at 200,000 groups, several times a version). The largest number of each state is
one step down this index, whatever the run's length. It replaces the (run_id, state) index, whose
lookups it serves as well, so a group's row keeps as many index entries to write.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_prompt_groups_run_id_state_n", "prompt_groups", ["run_id", "state", "n"])
    op.drop_index("ix_prompt_groups_run_id_state", "prompt_groups")


def downgrade() -> None:
    op.create_index("ix_prompt_groups_run_id_state", "prompt_groups", ["run_id", "state"])
    op.drop_index("ix_prompt_groups_run_id_state_n", "prompt_groups")
