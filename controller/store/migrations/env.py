"""Alembic's entry point: runs the revisions on the connection the store hands it
(migrations/__init__.py), inside that connection's transaction; it never opens one."""

from __future__ import annotations

from alembic import context

from crossfarm.controller.store.schema import Base

context.configure(connection=context.config.attributes["connection"],
                  target_metadata=Base.metadata,
                  # SQLite alters a table by copying it: a revision that drops or changes a
                  # column uses op.batch_alter_table, which does that there.
                  render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
