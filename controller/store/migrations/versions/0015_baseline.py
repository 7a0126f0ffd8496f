"""Baseline: the schema as crossfarm made it before migrations (SCHEMA_VERSION 15).

A database made then is adopted at this revision (its crossfarm_meta row says 15), never
created by it again.

Revision ID: 15
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "15"
down_revision: str | None = None
branch_labels = None
depends_on = None


def _index(name: str, table: str, columns: list[str], unique: bool = False) -> None:
    op.create_index(name, table, columns, unique=unique)


def upgrade() -> None:
    op.create_table("blobs",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("pack", sa.String(length=64), nullable=True),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest")
    )
    op.create_table("builds",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("cargo", sa.JSON(), nullable=False),
        sa.Column("timeout_s", sa.Integer(), nullable=False),
        sa.Column("env_names", sa.JSON(), nullable=False),
        sa.Column("env_sealed", sa.Text(), nullable=True),
        sa.Column("submitter", sa.String(length=200), nullable=True),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id")
    )
    _index("ix_builds_created_at_id", "builds", ["created_at", "id"])
    _index("ix_builds_submitter", "builds", ["submitter"])
    _index("ix_builds_submitter_created_at_id", "builds", ["submitter", "created_at", "id"])
    _index("ix_builds_tenant", "builds", ["tenant"])
    _index("ix_builds_tenant_created_at_id", "builds", ["tenant", "created_at", "id"])
    op.create_table("crossfarm_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("key")
    )
    op.create_table("git_credentials",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("username", sa.String(length=256), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "host")
    )
    op.create_table("tenant_blobs",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "digest")
    )
    op.create_table("tenant_trees",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "digest")
    )
    op.create_table("tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id")
    )
    _index("ix_tokens_sha256", "tokens", ["sha256"], unique=True)
    _index("ix_tokens_tenant", "tokens", ["tenant"])
    _index("ix_tokens_tenant_name", "tokens", ["tenant", "name"], unique=True)
    op.create_table("trees",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("total_bytes", sa.Integer(), nullable=False),
        sa.Column("commit", sa.String(length=64), nullable=True),
        sa.Column("locked", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest")
    )
    op.create_table("workers",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("drain", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("name")
    )
    op.create_table("jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("build_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=100), nullable=False),
        sa.Column("arch", sa.String(length=16), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=True),
        sa.Column("consumed_from", sa.String(length=100), nullable=True),
        sa.Column("placement", sa.String(length=16), nullable=False),
        sa.Column("placed", sa.String(length=500), nullable=True),
        sa.Column("waiting", sa.String(length=500), nullable=True),
        sa.Column("wait_limit_s", sa.Integer(), nullable=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=4000), nullable=True),
        sa.Column("manifest", sa.JSON(), nullable=True),
        sa.Column("lease_hash", sa.String(length=64), nullable=True),
        sa.Column("inputs", sa.String(length=64), nullable=True),
        sa.Column("image_id", sa.String(length=200), nullable=True),
        sa.Column("cached_from", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["build_id"], ["builds.id"], ),
        sa.PrimaryKeyConstraint("id")
    )
    _index("ix_jobs_build_id", "jobs", ["build_id"])
    _index("ix_jobs_build_id_state", "jobs", ["build_id", "state"])
    _index("ix_jobs_deadline", "jobs", ["deadline"])
    _index("ix_jobs_groups", "jobs",
           ["state", "sent_at", "queue", "placement", "tenant", "waiting", "queued_at"])
    _index("ix_jobs_held", "jobs", ["state", "sent_at", "queue", "tenant", "queued_at", "id"])
    _index("ix_jobs_inputs", "jobs", ["tenant", "inputs", "state"])
    _index("ix_jobs_line", "jobs", ["state", "sent_at", "queue", "queued_at", "id"])
    _index("ix_jobs_state", "jobs", ["state"])
    _index("ix_jobs_tenant", "jobs", ["tenant"])
    _index("ix_jobs_turn", "jobs", ["arch", "tenant", "sent_at"])


def downgrade() -> None:
    for table in ("jobs", "workers", "trees", "tokens", "tenant_trees", "tenant_blobs",
                  "git_credentials", "crossfarm_meta", "builds", "blobs"):
        op.drop_table(table)
