"""The system of record for builds and jobs: the only module that imports SQLAlchemy.

SQLite by default, PostgreSQL by URL. Every state change is one conditional
UPDATE (`WHERE state = current AND attempt = attempt`), so two racing reports
cannot both win and a stale attempt cannot overwrite a newer one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    String,
    TypeDecorator,
    create_engine,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from crossfarm.shared.arch import Arch, BuildMode, Placement
from crossfarm.shared.errors import NotFound
from crossfarm.shared.ids import BuildId, JobId, SourceDigest
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.states import BuildState, overall_state, transition
from crossfarm.shared.wire import (
    BuildView,
    CargoSpec,
    JobView,
    Manifest,
    SourceStatus,
    WorkerHeartbeat,
)


def _now() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class _UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and read back timezone-aware (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return _as_utc(value) if value is not None else None


class _Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: _UTCDateTime}


class _Build(_Base):
    __tablename__ = "builds"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(64))
    #: the CargoSpec, as JSON: a new cargo option needs no new column
    cargo: Mapped[dict[str, Any]] = mapped_column(JSON)
    timeout_s: Mapped[int]
    env: Mapped[dict[str, Any]] = mapped_column(JSON)
    submitter: Mapped[str | None] = mapped_column(String(200), index=True)
    jobs: Mapped[list[_Job]] = relationship(order_by="_Job.target", lazy="selectin")


class _Job(_Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"), index=True)
    target: Mapped[str] = mapped_column(String(100))
    arch: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempt: Mapped[int]
    worker: Mapped[str | None] = mapped_column(String(200))
    mode: Mapped[str | None] = mapped_column(String(16))
    consumed_from: Mapped[str | None] = mapped_column(String(100))
    placement: Mapped[str] = mapped_column(String(16))
    placed: Mapped[str | None] = mapped_column(String(500))
    waiting: Mapped[str | None] = mapped_column(String(500))
    wait_limit_s: Mapped[int | None]
    queued_at: Mapped[datetime]
    #: when its current attempt's message was sent to the broker
    sent_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    exit_code: Mapped[int | None]
    reason: Mapped[str | None] = mapped_column(String(4000))
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSON)


#: Bump on any change to the tables; a database made by another version is refused.
SCHEMA_VERSION = 6


class _Meta(_Base):
    __tablename__ = "crossfarm_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class _Blob(_Base):
    __tablename__ = "blobs"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int]
    #: the pack object holding it, or None when it is stored alone under blob_key
    pack: Mapped[str | None] = mapped_column(String(64))
    stored_at: Mapped[datetime]


class _Tree(_Base):
    __tablename__ = "trees"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    files: Mapped[int]
    total_bytes: Mapped[int]
    commit: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]


class _Worker(_Base):
    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON)
    started_at: Mapped[datetime]
    last_seen: Mapped[datetime]
    drain: Mapped[bool] = mapped_column(default=False)


@dataclass(frozen=True)
class WorkerRecord:
    name: str
    info: WorkerHeartbeat
    started_at: datetime
    last_seen: datetime
    drain: bool = False


@dataclass(frozen=True)
class NewJob:
    job_id: JobId
    target: str
    arch: Arch
    queue: QueueKey
    placement: str
    placed: str
    waiting: str | None
    wait_limit_s: int | None


@dataclass(frozen=True)
class NewBuild:
    build_id: BuildId
    source: SourceDigest
    cargo: CargoSpec
    timeout_s: int
    jobs: list[NewJob]
    #: {"all": {...}, "<target>": {...}}: the variables each job's container gets
    env: dict[str, dict[str, str]]
    submitter: str | None


@dataclass(frozen=True)
class BuildSettings:
    """A build's settings as one of its jobs gets them: its own target's variables
    merged over the shared ones."""

    source: SourceDigest
    cargo: CargoSpec
    timeout_s: int
    env: dict[str, str]


@dataclass(frozen=True)
class JobRecord:
    """A job with the build fields a worker needs; what the store hands the use-cases."""

    view: JobView
    build_id: BuildId
    manifest: Manifest | None
    sent_at: datetime | None = None


def _job_view(job: _Job) -> JobView:
    return JobView(
        job_id=JobId(job.id),
        target=job.target,
        arch=Arch(job.arch),
        queue=QueueKey.parse(job.queue),
        state=BuildState(job.state),
        attempt=job.attempt,
        worker=job.worker,
        mode=BuildMode(job.mode) if job.mode else None,
        consumed_from=job.consumed_from,
        placement=Placement(job.placement),
        placed=job.placed,
        waiting=job.waiting,
        wait_limit_s=job.wait_limit_s,
        queued_at=job.queued_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        exit_code=job.exit_code,
        reason=job.reason,
    )


def _build_view(build: _Build) -> BuildView:
    jobs = [_job_view(job) for job in build.jobs]
    return BuildView(
        build_id=BuildId(build.id),
        state=overall_state(job.state for job in jobs),
        created_at=build.created_at,
        source=SourceDigest(build.source),
        cargo=CargoSpec.model_validate(build.cargo),
        env_names=sorted({name for values in build.env.values() for name in values}),
        submitter=build.submitter,
        jobs=jobs,
    )


class Store:
    """Builds and jobs in a relational database."""

    def __init__(self, database_url: str) -> None:
        self._engine = _create_engine(database_url)
        self._check_schema(database_url)

    def _check_schema(self, url: str) -> None:
        """Create the tables in an empty database; refuse one another version made, rather
        than fail later on a missing column."""
        existing = set(inspect(self._engine).get_table_names())
        if not existing:
            _Base.metadata.create_all(self._engine)
            with self._session() as session:
                session.add(_Meta(key="schema_version", value=str(SCHEMA_VERSION)))
            return
        version = None
        if _Meta.__tablename__ in existing:
            with self._session() as session:
                row = session.get(_Meta, "schema_version")
                version = row.value if row else None
        if version != str(SCHEMA_VERSION):
            raise RuntimeError(
                f"the database at {url} has schema version {version or 'unknown'}; this "
                f"controller needs {SCHEMA_VERSION}. There are no migrations yet: keep the old "
                "database with its controller, or point CROSSFARM_DATABASE_URL at a new one.")

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            yield session

    def add_build(self, new: NewBuild) -> BuildView:
        now = _now()
        build = _Build(
            id=new.build_id,
            created_at=now,
            source=new.source,
            cargo=new.cargo.model_dump(mode="json"),
            timeout_s=new.timeout_s,
            env=new.env,
            submitter=new.submitter,
            jobs=[
                _Job(
                    id=job.job_id, target=job.target, arch=job.arch.value, queue=job.queue.name,
                    state=BuildState.QUEUED.value, attempt=1, queued_at=now,
                    placement=job.placement, placed=job.placed, waiting=job.waiting,
                    wait_limit_s=job.wait_limit_s, sent_at=now,
                )
                for job in new.jobs
            ],
        )
        with self._session() as session:
            session.add(build)
        return _build_view(build)

    def build(self, build_id: BuildId) -> BuildView:
        with self._session() as session:
            build = session.get(_Build, build_id)
            if build is None:
                raise NotFound(f"no build {build_id}")
            return _build_view(build)

    def build_settings(self, build_id: BuildId, target: str) -> BuildSettings:
        """What a job message of `target` repeats from its build."""
        with self._session() as session:
            build = session.get(_Build, build_id)
            if build is None:
                raise NotFound(f"no build {build_id}")
            return BuildSettings(
                source=SourceDigest(build.source),
                cargo=CargoSpec.model_validate(build.cargo),
                timeout_s=build.timeout_s,
                env={**build.env.get("all", {}), **build.env.get(target, {})},
            )

    def list_builds(self, submitter: str | None, state: BuildState | None, limit: int
                    ) -> list[BuildView]:
        """The newest builds first, optionally only one submitter's or in one state."""
        query = select(_Build).order_by(_Build.created_at.desc())
        if submitter is not None:
            query = query.where(_Build.submitter == submitter)
        # A build's state is derived from its jobs, so filter after reading a bounded window.
        with self._session() as session:
            views = [_build_view(b) for b in session.scalars(query.limit(max(limit, 1) * 20))]
        return [v for v in views if state is None or v.state is state][:limit]

    def job(self, job_id: JobId) -> JobRecord:
        with self._session() as session:
            job = session.get(_Job, job_id)
            if job is None:
                raise NotFound(f"no job {job_id}")
            manifest = Manifest.model_validate(job.manifest) if job.manifest else None
            return JobRecord(view=_job_view(job), build_id=BuildId(job.build_id), manifest=manifest,
                             sent_at=job.sent_at)

    def move_job(
        self, job_id: JobId, attempt: int, new: BuildState, **fields: Any
    ) -> JobView | None:
        """Move a job to `new` if the table allows it from its current state and `attempt`
        is still current. Returns the updated job, or None if another move won the race.
        Raises IllegalTransition for a move the state machine forbids."""
        with self._session() as session:
            job = session.get(_Job, job_id)
            if job is None:
                raise NotFound(f"no job {job_id}")
            current = BuildState(job.state)
            transition(current, new)
            if new is BuildState.RUNNING:
                fields.setdefault("started_at", _now())
            if new.terminal:
                fields.setdefault("finished_at", _now())
            result = session.execute(
                update(_Job)
                .where(_Job.id == job_id, _Job.state == current.value, _Job.attempt == attempt)
                .values(state=new.value, **fields)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
        return self.job(job_id).view

    def requeue(self, job_id: JobId, attempt: int, queue: QueueKey, placed: str
                ) -> JobView | None:
        """Move a queued job to another queue under a new attempt number, so the message
        left in the old queue is refused when a worker picks it up. None if the job
        moved on (started, cancelled or requeued) in the meantime."""
        with self._session() as session:
            result = session.execute(
                update(_Job)
                .where(_Job.id == job_id, _Job.state == BuildState.QUEUED.value,
                       _Job.attempt == attempt)
                .values(attempt=attempt + 1, queue=queue.name, placed=placed, waiting=None,
                        sent_at=_now())
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
        return self.job(job_id).view

    def retry(self, job_id: JobId, attempt: int, queue: QueueKey, placed: str
              ) -> JobView | None:
        """Put a running job back in the queue under attempt+1 (its worker was lost). The old
        attempt can no longer start, finish or publish. None if the job moved on."""
        with self._session() as session:
            transition(BuildState.RUNNING, BuildState.QUEUED)
            result = session.execute(
                update(_Job)
                .where(_Job.id == job_id, _Job.state == BuildState.RUNNING.value,
                       _Job.attempt == attempt)
                .values(state=BuildState.QUEUED.value, attempt=attempt + 1, queue=queue.name,
                        placed=placed, waiting=None, worker=None, mode=None,
                        consumed_from=None, started_at=None, sent_at=_now())
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
        return self.job(job_id).view

    def running_jobs_records(self) -> list[JobRecord]:
        with self._session() as session:
            ids = session.scalars(select(_Job.id).where(
                _Job.state == BuildState.RUNNING.value)).all()
        return [self.job(JobId(job_id)) for job_id in ids]

    def set_waiting(self, waiting: dict[str, str | None]) -> list[str]:
        """Record, per queued job id, what it is waiting for; returns the ids whose text
        changed."""
        changed = []
        with self._session() as session:
            for job_id, text in waiting.items():
                result = session.execute(
                    update(_Job).where(_Job.id == job_id, _Job.state == BuildState.QUEUED.value,
                                       _Job.waiting.is_distinct_from(text))
                    .values(waiting=text).execution_options(synchronize_session=False))
                if result.rowcount:  # type: ignore[attr-defined]
                    changed.append(job_id)
        return changed

    def queued_jobs(self) -> list[JobRecord]:
        """Every queued job, oldest first."""
        with self._session() as session:
            ids = session.scalars(select(_Job.id).where(_Job.state == BuildState.QUEUED.value)
                                  .order_by(_Job.queued_at, _Job.id)).all()
        return [self.job(JobId(job_id)) for job_id in ids]

    def jobs_of(self, build_id: BuildId) -> list[JobRecord]:
        with self._session() as session:
            ids = session.scalars(select(_Job.id).where(_Job.build_id == build_id)).all()
        return [self.job(JobId(job_id)) for job_id in ids]

    def missing_blobs(self, digests: list[str]) -> list[str]:
        """The digests in `digests` that no upload has stored yet."""
        with self._session() as session:
            present = self._present(session, digests)
        return [digest for digest in dict.fromkeys(digests) if digest not in present]

    @staticmethod
    def _present(session: Session, digests: list[str]) -> set[str]:
        present: set[str] = set()
        for start in range(0, len(digests), 500):  # stay under SQL parameter limits
            chunk = digests[start:start + 500]
            present.update(session.scalars(select(_Blob.digest).where(_Blob.digest.in_(chunk))))
        return present

    def add_blobs(self, sizes: dict[str, int], pack: str | None = None) -> None:
        """Record stored blobs in one transaction; a blob already recorded keeps its place."""
        now = _now()
        with self._session() as session:
            known = set(self._present(session, list(sizes)))
            session.add_all(_Blob(digest=d, size=s, pack=pack, stored_at=now)
                            for d, s in sizes.items() if d not in known)

    def blob_packs(self, digests: list[str]) -> dict[str, str]:
        """digest -> pack for the given blobs that are stored in a pack."""
        packs: dict[str, str] = {}
        with self._session() as session:
            for start in range(0, len(digests), 500):
                rows = session.execute(select(_Blob.digest, _Blob.pack).where(
                    _Blob.digest.in_(digests[start:start + 500]), _Blob.pack.is_not(None)))
                packs.update({digest: pack for digest, pack in rows if pack})
        return packs

    def add_tree(self, status: SourceStatus) -> None:
        with self._session() as session:
            if session.get(_Tree, status.digest) is None:
                session.add(_Tree(digest=status.digest, files=status.files,
                                  total_bytes=status.total_bytes, commit=status.commit,
                                  created_at=_now()))

    def tree(self, digest: str) -> SourceStatus:
        with self._session() as session:
            tree = session.get(_Tree, digest)
            if tree is None:
                raise NotFound(f"no source tree {digest}; send it with POST /v1/sources first")
            return SourceStatus(digest=SourceDigest(tree.digest), files=tree.files,
                                total_bytes=tree.total_bytes, commit=tree.commit)

    def heartbeat(self, name: str, info: WorkerHeartbeat, fresh_start: bool) -> bool:
        """Record a worker's heartbeat; `fresh_start` resets its start time. Returns
        whether an operator asked it to drain."""
        now = _now()
        with self._session() as session:
            worker = session.get(_Worker, name)
            if worker is None:
                session.add(_Worker(name=name, info=info.model_dump(mode="json"),
                                    started_at=now, last_seen=now, drain=False))
                return False
            worker.info = info.model_dump(mode="json")
            worker.last_seen = now
            if fresh_start:
                worker.started_at = now
            return worker.drain

    def set_drain(self, name: str, drain: bool) -> None:
        with self._session() as session:
            worker = session.get(_Worker, name)
            if worker is None:
                raise NotFound(f"no worker {name!r}; crossfarm workers lists them")
            worker.drain = drain

    def workers(self) -> list[WorkerRecord]:
        with self._session() as session:
            rows = session.scalars(select(_Worker).order_by(_Worker.name)).all()
            return [WorkerRecord(name=w.name, info=WorkerHeartbeat.model_validate(w.info),
                                 started_at=w.started_at, last_seen=w.last_seen, drain=w.drain)
                    for w in rows]

    def running_jobs(self) -> dict[str, list[JobId]]:
        """Worker name -> the ids of the jobs the record says it is running."""
        with self._session() as session:
            rows = session.execute(select(_Job.worker, _Job.id).where(
                _Job.state == BuildState.RUNNING.value)).all()
        running: dict[str, list[JobId]] = {}
        for worker, job_id in rows:
            running.setdefault(worker or "", []).append(JobId(job_id))
        return running

    def oldest_queued(self) -> dict[Arch, datetime]:
        """Architecture -> when its longest-waiting queued job was queued."""
        with self._session() as session:
            rows = session.execute(
                select(_Job.arch, func.min(_Job.queued_at))
                .where(_Job.state == BuildState.QUEUED.value).group_by(_Job.arch)
            ).all()
        return {Arch(arch): _as_utc(when) for arch, when in rows if when is not None}

    def close(self) -> None:
        self._engine.dispose()


def _create_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    path = url.removeprefix("sqlite:///")
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets the SSE readers and the worker reports proceed side by side.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
