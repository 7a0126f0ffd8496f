"""The database's revisions, applied by Alembic (the only package that imports it). They
live in the package, so an installed wheel has them: one file per revision in
`versions/`, numbered as SCHEMA_VERSION counts.

    15  baseline: the tables as crossfarm made them before migrations
    └── 16  builds.project, jobs.routed_to (placer affinity)
        └── 17  byte counts (blob and tree sizes) in 64 bits

What a controller does with the database it is given (`prepare`), in one transaction
(on PostgreSQL under an advisory lock, so controllers starting together take turns):

    empty                    -> the tables made at the head revision
    at the head              -> used as it is
    behind                   -> refused, naming `crossfarm-controller migrate`; upgraded
                                first when CROSSFARM_MIGRATE_ON_START is true
    ahead, or unknown        -> refused: a newer crossfarm made it
    made before migrations   -> its crossfarm_meta `schema_version` (15 or 16) says where
                                it stands: stamped so, then as above; older ones refused

`crossfarm-controller migrate` (`upgrade`) brings a database to the head and says from
where. A change to the tables is a new file in `versions/` (its `down_revision` the head
before it) and SCHEMA_VERSION bumped with it: the tests prove the revisions make exactly
the tables the models describe, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import delete, event, inspect, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError

from crossfarm.controller.store.schema import Base, MetaRow, create_database_engine

#: the command that upgrades a database, as the refusal names it
MIGRATE = "crossfarm-controller migrate"
#: PostgreSQL advisory lock key held while a controller checks or changes the schema
_LOCK = 0x63726F73  # "cros"
#: the crossfarm_meta row a database made before migrations keeps its version in
_LEGACY_KEY = "schema_version"
#: the versions crossfarm made databases at before migrations, that revisions here match
_LEGACY_VERSIONS = ("15", "16")


class SchemaError(RuntimeError):
    """The database is not at this controller's revision and was not changed; `revision`
    is where it stands (None: unknown), `head` what this controller needs."""

    def __init__(self, message: str, database: str, revision: str | None, head: str) -> None:
        super().__init__(message)
        self.database = database
        self.revision = revision
        self.head = head


class Unreachable(RuntimeError):
    """The database did not answer (down, wrong address or credentials); `database` is
    its URL without the password."""

    def __init__(self, message: str, database: str) -> None:
        super().__init__(message)
        self.database = database


@dataclass(frozen=True)
class Upgraded:
    """Where `upgrade` found a database (None: empty) and where it left it."""

    before: str | None
    after: str


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision: this controller's schema."""
    revision = _scripts().get_current_head()
    if revision is None:
        raise RuntimeError(f"{Path(__file__).parent / 'versions'} holds no revision: the "
                           "installed package is incomplete; reinstall crossfarm")
    return revision


def prepare(url: str, migrate: bool = False) -> None:
    """Make an empty database at the head, use one at the head, upgrade one behind when
    `migrate`; else raise SchemaError saying what to do."""
    _refuse_in_memory(url)
    with _locked(url) as conn:
        at = _revision(conn, url)
        if at is None:
            _create(conn)
            return
        if at == head():
            return
        if not migrate:
            raise SchemaError(
                f"the database at {_safe(url)} is at schema revision {at}; this controller "
                f"needs {head()}. Upgrade it with `{MIGRATE}` (same environment as the "
                "controller; back it up first), or start the controller with "
                "CROSSFARM_MIGRATE_ON_START=true to upgrade it at start-up.",
                _safe(url), at, head())
        command.upgrade(_config(conn), "head")


def upgrade(url: str) -> Upgraded:
    """`crossfarm-controller migrate`: bring the database to the head (an empty one is
    made there)."""
    _refuse_in_memory(url)
    with _locked(url) as conn:
        at = _revision(conn, url)
        if at is None:
            _create(conn)
            return Upgraded(None, head())
        if at != head():
            command.upgrade(_config(conn), "head")
        return Upgraded(at, head())


def _create(conn: Connection) -> None:
    """An empty database gets the models' tables at once, stamped at the head: the same
    tables the revisions make one by one (the tests hold them to that)."""
    Base.metadata.create_all(conn)
    MigrationContext.configure(conn).stamp(_scripts(), "head")


def _revision(conn: Connection, url: str) -> str | None:
    """The revision the database is at, None if it is empty (a database made before
    migrations is stamped at the one its version names); SchemaError if this controller
    does not know it."""
    tables = set(inspect(conn).get_table_names())
    if not tables:
        return None
    context = MigrationContext.configure(conn)
    heads = context.get_current_heads()
    if not heads:
        heads = (_adopt(conn, url, tables),)
    if len(heads) != 1:
        raise SchemaError(f"the database at {_safe(url)} is at several schema revisions "
                          f"({', '.join(heads)}): it was not made by crossfarm's migrations",
                          _safe(url), None, head())
    revision = heads[0]
    try:
        known = _scripts().get_revision(revision)
    except CommandError:
        known = None
    if known is None:
        raise SchemaError(
            f"the database at {_safe(url)} is at schema revision {revision}, which this "
            f"controller (revision {head()}) does not know: a newer crossfarm made it. Run "
            "that version, or point CROSSFARM_DATABASE_URL at another database.",
            _safe(url), revision, head())
    return revision


def _adopt(conn: Connection, url: str, tables: set[str]) -> str:
    """Stamp a database made before migrations at the revision its meta row names."""
    version = None
    if MetaRow.__tablename__ in tables:
        version = conn.scalar(select(MetaRow.value).where(MetaRow.key == _LEGACY_KEY))
    oldest = _scripts().get_base()
    if version not in _LEGACY_VERSIONS:
        raise SchemaError(
            f"the database at {_safe(url)} has tables but no schema revision crossfarm "
            f"knows (its version: {version or 'none'}; migrations start at {oldest}): "
            "keep it with the crossfarm that made it, or point CROSSFARM_DATABASE_URL at a "
            "new database.", _safe(url), version, head())
    MigrationContext.configure(conn).stamp(_scripts(), version)
    conn.execute(delete(MetaRow).where(MetaRow.key == _LEGACY_KEY))
    return version


@contextmanager
def _locked(url: str) -> Iterator[Connection]:
    """One transaction that changes of the schema happen in whole or not at all, taken
    in turns: PostgreSQL's DDL is transactional; SQLite's is too once the driver stops
    committing before each DDL statement, and BEGIN IMMEDIATE takes its write lock."""
    engine = create_database_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _driver_leaves_transactions_alone)
        event.listen(engine, "begin", _begin_immediate)
    try:
        try:
            conn = engine.connect()
        except OperationalError as exc:
            raise Unreachable(f"cannot open the database at {_safe(url)}: {exc.orig}; check "
                              "CROSSFARM_DATABASE_URL and that the server is up",
                              _safe(url)) from None
        with conn, conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
            yield conn
    finally:
        engine.dispose()


def _driver_leaves_transactions_alone(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _refuse_in_memory(url: str) -> None:
    # Each connection to one would be a database of its own: the tables made here would
    # not be the store's.
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ValueError(f"{url} is an in-memory SQLite database, which the controller's "
                         "connections would not share: give a file, sqlite:///PATH")


def _safe(url: str) -> str:
    """The URL with its password hidden, for messages."""
    return make_url(url).render_as_string(hide_password=True)
