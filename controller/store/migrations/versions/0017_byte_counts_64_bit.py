"""Byte counts in 64 bits: PostgreSQL's INTEGER stops at 2 GiB, below what a farm's
limits may allow for a file (CROSSFARM_MAX_FILE_BYTES) or a tree (…_MAX_SOURCE_BYTES).
On SQLite, whose integers are 64-bit already, the tables are copied with the new types.

Revision ID: 17
Revises: 16
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "17"
down_revision = "16"
branch_labels = None
depends_on = None

_COLUMNS = (("blobs", "size"), ("tenant_blobs", "size"), ("trees", "total_bytes"))


def upgrade() -> None:
    for table, column in _COLUMNS:
        with op.batch_alter_table(table) as altered:
            altered.alter_column(column, type_=sa.BigInteger(), existing_type=sa.Integer(),
                                 existing_nullable=False)


def downgrade() -> None:
    for table, column in _COLUMNS:
        with op.batch_alter_table(table) as altered:
            altered.alter_column(column, type_=sa.Integer(), existing_type=sa.BigInteger(),
                                 existing_nullable=False)
