"""The tables and the connection: the database's shape, shared by the stores beside it.

Tables: `builds` and their `jobs`; `blobs` and `trees` (the sources, stored once) with
`tenant_blobs` and `tenant_trees` (who proved to hold which); `workers`; `tokens` (the
hashes of issued API tokens); `git_credentials` (tenants' git tokens, sealed); and
`crossfarm_meta` holding the schema version a
database was made with and a text sealed with its secrets key (vault.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    ORMExecuteState,
    Session,
    UOWTransaction,
    mapped_column,
    relationship,
    sessionmaker,
)

_T = TypeVar("_T")
_K = TypeVar("_K")

#: Values per IN (…) list, to stay under SQL parameter limits.
IN_LIST = 500


def chunks(values: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """`values` in slices short enough for one IN (…) list each."""
    for start in range(0, len(values), IN_LIST):
        yield values[start:start + IN_LIST]


def now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class _UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and read back timezone-aware (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return as_utc(value) if value is not None else None


class _Clipped(TypeDecorator[str]):
    """Free text (a reason, a placement note) cut to its column's length, its last kept
    character replaced by "…": PostgreSQL refuses a longer value where SQLite kept it
    whole, and the move that writes such a text must not fail for its length."""

    impl = String
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        if value is not None and len(value) > self.length:
            return value[:self.length - 1] + "…"
        return value


#: The tenant of a farm with no tokens (the loopback `make up` farm) and of old records.
DEFAULT_TENANT = "default"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: _UTCDateTime}


class BuildRow(Base):
    __tablename__ = "builds"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(64))
    #: the CargoSpec, as JSON: a new cargo option needs no new column
    cargo: Mapped[dict[str, Any]] = mapped_column(JSON)
    timeout_s: Mapped[int]
    #: the names of its variables, kept for the build's life: views show names, never values
    env_names: Mapped[list[str]] = mapped_column(JSON)
    #: their values, {"all": {...}, "<target>": {...}}, sealed (vault.py); None when it has
    #: none or once every job of the build has ended
    env_sealed: Mapped[str | None] = mapped_column(Text)
    submitter: Mapped[str | None] = mapped_column(String(200), index=True)
    #: BuildRequest.project: whose warm target dir its jobs want (placer affinity)
    project: Mapped[str | None] = mapped_column(String(200))
    #: who owns it: every read of a build, its jobs, logs and artifacts is scoped to it
    tenant: Mapped[str] = mapped_column(String(64), index=True, default=DEFAULT_TENANT)
    jobs: Mapped[list[JobRow]] = relationship(order_by="JobRow.target", lazy="selectin")

    # The listing's order and its keyset cursor, whole or within a tenant or a submitter.
    __table_args__ = (
        Index("ix_builds_created_at_id", "created_at", "id"),
        Index("ix_builds_tenant_created_at_id", "tenant", "created_at", "id"),
        Index("ix_builds_submitter_created_at_id", "submitter", "created_at", "id"),
    )


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"), index=True)
    #: its build's tenant, repeated so the placer's fair share needs no join
    tenant: Mapped[str] = mapped_column(String(64), index=True, default=DEFAULT_TENANT)
    target: Mapped[str] = mapped_column(String(100))
    arch: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempt: Mapped[int]
    worker: Mapped[str | None] = mapped_column(String(200))
    mode: Mapped[str | None] = mapped_column(String(16))
    consumed_from: Mapped[str | None] = mapped_column(String(100))
    placement: Mapped[str] = mapped_column(String(16))
    placed: Mapped[str | None] = mapped_column(_Clipped(500))
    waiting: Mapped[str | None] = mapped_column(_Clipped(500))
    wait_limit_s: Mapped[int | None]
    queued_at: Mapped[datetime]
    #: when a queued job fails unless a worker started it: queued_at + wait_limit_s
    deadline: Mapped[datetime | None] = mapped_column(index=True)
    #: when the placer sent its current attempt's message to the broker; None while the
    #: placer holds it back (no free slot, or its tenant at its limit)
    sent_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    exit_code: Mapped[int | None]
    reason: Mapped[str | None] = mapped_column(_Clipped(4000))
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: sha256 (hex) of the secret the current attempt's worker was given when it started
    #: it, never the secret: only that worker can report the attempt's outcome
    lease_hash: Mapped[str | None] = mapped_column(String(64))
    #: the result cache's key for its inputs (source, target, cargo spec, variables' values),
    #: keyed with the farm's secret (vault.py) so values cannot be guessed from it offline
    inputs: Mapped[str | None] = mapped_column(String(64))
    #: the builder image its artifacts were made with, from its manifest (a served job:
    #: the earlier one's)
    image_id: Mapped[str | None] = mapped_column(String(200))
    #: served from the result cache: the earlier build whose artifacts it has
    cached_from: Mapped[str | None] = mapped_column(String(32))
    #: the worker whose own queue the current attempt's message went to (it keeps the
    #: project's warm target dir); None: the shared queue
    routed_to: Mapped[str | None] = mapped_column(String(200))
    #: what its worker's build found done (a CargoReuse document): warm or cold target
    #: dir, and cargo's fresh units
    reuse: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        # The listing's state filter asks "has this build a job in state x?" per build.
        Index("ix_jobs_build_id_state", "build_id", "state"),
        # The placer's reads: held jobs by queue and tenant, oldest first (its fair
        # dispatch), and by queue alone (a held job's position in line, counted on read).
        Index("ix_jobs_held", "state", "sent_at", "queue", "tenant", "queued_at", "id"),
        Index("ix_jobs_line", "state", "sent_at", "queue", "queued_at", "id"),
        # Covers the placer's count of held jobs per group: read off the index, in order.
        Index("ix_jobs_groups", "state", "sent_at", "queue", "placement", "tenant", "waiting",
              "queued_at"),
        # When each tenant was last given a slot on an architecture: its turn in line.
        Index("ix_jobs_turn", "arch", "tenant", "sent_at"),
        # The result cache's lookup: a tenant's succeeded jobs with these inputs.
        Index("ix_jobs_inputs", "tenant", "inputs", "state"),
        # The dashboard's chart: the jobs started in the last day.
        Index("ix_jobs_started_at", "started_at"),
    )


#: The head revision in migrations/versions/: a change to the tables is a new revision
#: there, and this number bumped with it (a test holds the two equal).
SCHEMA_VERSION = 19


class MetaRow(Base):
    __tablename__ = "crossfarm_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class BlobRow(Base):
    __tablename__ = "blobs"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    #: the pack object holding it, or None when it is stored alone under blob_key
    pack: Mapped[str | None] = mapped_column(String(64))
    stored_at: Mapped[datetime]


class TreeRow(Base):
    __tablename__ = "trees"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    files: Mapped[int]
    total_bytes: Mapped[int] = mapped_column(BigInteger)
    commit: Mapped[str | None] = mapped_column(String(64))
    #: it has a Cargo.lock at its root (only then may the result cache serve its builds)
    locked: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]


class TenantBlobRow(Base):
    """A tenant sent these bytes itself (hash-checked): only then is the blob present for
    it, so no tenant learns from /v1/blobs/missing what another one holds."""

    __tablename__ = "tenant_blobs"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: repeated from the blob so a tenant's storage sums without a join
    size: Mapped[int] = mapped_column(BigInteger)


class TenantTreeRow(Base):
    """A tenant made this tree from blobs it holds: only its owners read or build it."""

    __tablename__ = "tenant_trees"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)


class TokenRow(Base):
    """An issued API token: its sha256, never the token (32 random bytes need no slow
    hash), with its tenant, role and life."""

    __tablename__ = "tokens"
    __table_args__ = (Index("ix_tokens_sha256", "sha256", unique=True),
                      # a name says which token of its tenant submitted a build
                      Index("ix_tokens_tenant_name", "tenant", "name", unique=True))

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class GitCredentialRow(Base):
    """A tenant's credential for one git host: the user in clear, the token sealed."""

    __tablename__ = "git_credentials"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(253), primary_key=True)
    username: Mapped[str] = mapped_column(String(256))
    sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class WorkerRow(Base):
    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON)
    started_at: Mapped[datetime]
    last_seen: Mapped[datetime]
    drain: Mapped[bool] = mapped_column(default=False)


def insert_new(session: Session, row_type: type[Base], rows: list[dict[str, Any]]) -> None:
    """Insert those of `rows` whose keys are not there yet, leaving the rows there as
    they are (INSERT … ON CONFLICT DO NOTHING): requests adding the same keys at once
    all succeed, where a read-then-insert lets two of them see a key missing and the
    second fail on it (SQLite too: its write lock is taken at the first write, after
    the read)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    session.execute(insert(cast(Table, row_type.__table__)).on_conflict_do_nothing(), rows)


class WriteClock:
    """Tells a cache whether what it read is still what the database holds: each table's
    count of write transactions begun and ended, and how many are still in flight.

    Exact only while this process is the database's one writer: so it runs only on
    SQLite, which one controller holds (the Helm chart runs one). On PostgreSQL, which
    several controllers may share, `stamp` is always None and every read is a read."""

    def __init__(self, enabled: bool = True) -> None:
        self._enabled = enabled
        self._lock = threading.Lock()
        self._ticks: dict[str, int] = {}
        self._open: dict[str, int] = {}

    def begin(self, tables: set[str]) -> None:
        with self._lock:
            for table in tables:
                self._ticks[table] = self._ticks.get(table, 0) + 1
                self._open[table] = self._open.get(table, 0) + 1

    def end(self, tables: set[str]) -> None:
        """After the commit (or rollback): a read begun from now on sees it."""
        with self._lock:
            for table in tables:
                self._ticks[table] += 1
                self._open[table] -= 1

    def stamp(self, tables: tuple[str, ...]) -> int | None:
        """Changes whenever one of `tables` is written; None while a write to one is in
        flight (what a read returns then may be about to change: keep none of it). A
        value read between two equal stamps is the committed state as of both."""
        if not self._enabled:
            return None
        with self._lock:
            if any(self._open.get(table) for table in tables):
                return None
            return sum(self._ticks.get(table, 0) for table in tables)


class Kept(Generic[_K, _T]):
    """Values read from `tables`, kept until one of them is written (see WriteClock), at
    most `size` of them: a hit is what a read would return now."""

    def __init__(self, clock: WriteClock, tables: tuple[str, ...], size: int = 4096) -> None:
        self._clock, self._tables, self._size = clock, tables, size
        self._lock = threading.Lock()
        # One stamp's values, swapped whole: a value of another stamp is stale.
        self._kept: tuple[int | None, dict[_K, _T]] = (None, {})

    def get(self, key: _K) -> _T | None:
        stamp = self._clock.stamp(self._tables)
        kept_stamp, values = self._kept
        if stamp is None or stamp != kept_stamp:
            return None
        return values.get(key)

    def stamp(self) -> int | None:
        """Take before the read whose value `keep` is given."""
        return self._clock.stamp(self._tables)

    def keep(self, stamp: int | None, key: _K, value: _T) -> None:
        """Keep `value`, read after `stamp` was taken, unless a write began since."""
        if stamp is None or stamp != self._clock.stamp(self._tables):
            return
        with self._lock:
            kept_stamp, values = self._kept
            if stamp != kept_stamp or len(values) >= self._size:
                self._kept = (stamp, {key: value})
            else:
                values[key] = value


class Database:
    """One engine and its transactions (migrations.prepare has made the database ready).

    Each transaction that writes is seen by `clock` (for the caches of the stores) and,
    on SQLite, holds `_write_lock` from its first write to its commit: SQLite takes one
    writer at a time, and a thread left to wait in its busy handler sleeps in steps of
    up to 100 ms, where a lock hands over at once."""

    def __init__(self, url: str) -> None:
        self.engine = create_database_engine(url)
        sqlite = url.startswith("sqlite")
        self.clock = WriteClock(enabled=sqlite)
        self._write_lock = threading.RLock() if sqlite else None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._sessions, "before_flush", self._flushing)
        event.listen(self._sessions, "do_orm_execute", self._executing)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction, committed when the block ends."""
        with self._sessions() as session:
            try:
                with session.begin():
                    yield session
            finally:
                written: set[str] = session.info.pop("written", set())
                if written:
                    self.clock.end(written)
                    if self._write_lock is not None:
                        self._write_lock.release()

    def _writes(self, session: Session, tables: set[str]) -> None:
        """The session is about to write `tables`: the first write takes the write lock."""
        written: set[str] | None = session.info.get("written")
        if written is None:
            if self._write_lock is not None:
                self._write_lock.acquire()
            written = session.info["written"] = set()
        new = tables - written
        if new:
            written |= new
            self.clock.begin(new)

    def _flushing(self, session: Session, _flush: UOWTransaction, _instances: object) -> None:
        tables = {obj.__table__.name for obj in (*session.new, *session.dirty, *session.deleted)}
        if tables:
            self._writes(session, tables)

    def _executing(self, state: ORMExecuteState) -> None:
        if state.is_insert or state.is_update or state.is_delete:
            self._writes(state.session, {state.statement.table.name})  # type: ignore[attr-defined]

    def close(self) -> None:
        self.engine.dispose()


#: the URL schemes of the databases crossfarm runs on (settings.py checks them first)
_POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg", "postgres")


def create_database_engine(url: str) -> Engine:
    """The engine for a SQLite or PostgreSQL URL; `postgresql://` (and `postgres://`)
    mean the psycopg 3 driver, the one crossfarm ships with (the `postgres` extra)."""
    scheme = url.split("://", 1)[0]
    if scheme in _POSTGRES_SCHEMES:
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
        try:
            return create_engine(url, pool_pre_ping=True)
        except ModuleNotFoundError as exc:
            raise RuntimeError(
                f"the PostgreSQL driver is not installed ({exc}): install crossfarm with its "
                "postgres extra, e.g. pip install 'crossfarm[controller,postgres]'") from None
    path = url.removeprefix("sqlite:///")
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets the SSE readers and the worker reports proceed side by side. In WAL,
        # synchronous=NORMAL syncs at checkpoints rather than at every commit: the
        # database stays consistent through any crash, and a controller process crash
        # loses nothing; an OS crash or power cut may lose the last commits (docs/architecture.md).
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
