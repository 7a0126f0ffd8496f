"""The system of record: the only package that imports SQLAlchemy. SQLite by default,
PostgreSQL by URL.

One database, stores by what they keep: `schema.py` (the tables, the engine),
`migrations/` (its revisions, applied by Alembic), `builds.py` (what was asked), `jobs.py`
(where each target's job stands; every move a conditional UPDATE), `sources.py` (blobs
and trees, and which tenant holds which), `workers.py` (heartbeats and drain requests),
`tokens.py` (issued API tokens, by hash), `usage.py` (what each tenant holds, for its
quotas), `census.py` (counts for /metrics); `group_commit.py` commits writes that arrive
together in one transaction. `Store` opens the database once and holds one of each.
`vault.py` seals the values of a build's variables, the only values kept encrypted.
"""

from __future__ import annotations

from crossfarm.controller.store import migrations
from crossfarm.controller.store.builds import BuildStore
from crossfarm.controller.store.census import CensusStore
from crossfarm.controller.store.credentials import CredentialStore
from crossfarm.controller.store.jobs import JobStore
from crossfarm.controller.store.schema import Database
from crossfarm.controller.store.sources import SourceStore
from crossfarm.controller.store.tokens import TokenStore
from crossfarm.controller.store.usage import UsageStore
from crossfarm.controller.store.vault import open_vault
from crossfarm.controller.store.workers import WorkerStore


class Store:
    """The controller's record: builds, jobs, sources and workers in one database."""

    def __init__(self, database_url: str, secrets_key: str | None = None,
                 migrate: bool = False) -> None:
        """`secrets_key` seals build variables (vault.py says where one comes from when
        it is None); a key the database was not made with is refused here. A database
        behind this controller's schema is upgraded with `migrate`, else refused
        (migrations.SchemaError)."""
        vault = open_vault(database_url, secrets_key)
        migrations.prepare(database_url, migrate)
        self.db = Database(database_url)
        vault.check(self.db)
        #: seals build variables and makes the result cache's keyed digests
        self.vault = vault
        self.builds = BuildStore(self.db, vault)
        self.jobs = JobStore(self.db)
        self.sources = SourceStore(self.db)
        self.workers = WorkerStore(self.db)
        self.tokens = TokenStore(self.db)
        self.usage = UsageStore(self.db)
        self.credentials = CredentialStore(self.db, vault)
        #: counts for /metrics, and the readiness probe's round trip
        self.census = CensusStore(self.db)

    def close(self) -> None:
        """Stop taking writes, finish those under way, then let the database go."""
        self.builds.close()
        self.db.close()
