"""What cargo found done when a worker built the job: a warm or a cold target dir, and
how many of its units were fresh (the CACHE column's `warm:97%`). Empty on older rows,
and on jobs the result cache served or no worker ran.

Revision ID: 18
Revises: 17
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "18"
down_revision = "17"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("reuse", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("reuse")
