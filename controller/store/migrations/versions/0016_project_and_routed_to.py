"""Placer affinity: the build's project (whose warm target dir its jobs want) and the
worker whose own queue a job's current attempt went to. Both empty on older rows: their
builds sent no project, and their jobs went to the shared queue.

Revision ID: 16
Revises: 15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "16"
down_revision = "15"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("builds", sa.Column("project", sa.String(length=200), nullable=True))
    op.add_column("jobs", sa.Column("routed_to", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("routed_to")
    with op.batch_alter_table("builds") as builds:
        builds.drop_column("project")
