"""The dashboard's chart reads the last day's jobs by when they started: an index on
jobs.started_at, so that read no longer scans every job the farm ever ran.

Revision ID: 19
Revises: 18
"""

from __future__ import annotations

from alembic import op

revision = "19"
down_revision = "18"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_started_at", "jobs", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_started_at", table_name="jobs")
