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
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from crossfarm.shared.errors import NotFound
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.states import BuildState, overall_state, transition
from crossfarm.shared.wire import BuildMode, BuildView, JobView, Manifest


def _now() -> datetime:
    return datetime.now(UTC)


class _UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and read back timezone-aware (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class _Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: _UTCDateTime}


class _Build(_Base):
    __tablename__ = "builds"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(64))
    profile: Mapped[str] = mapped_column(String(64))
    features: Mapped[list[str]] = mapped_column(JSON)
    all_features: Mapped[bool]
    no_default_features: Mapped[bool]
    cargo_args: Mapped[list[str]] = mapped_column(JSON)
    timeout_s: Mapped[int]
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
    queued_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    exit_code: Mapped[int | None]
    reason: Mapped[str | None] = mapped_column(String(4000))
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSON)


@dataclass(frozen=True)
class NewJob:
    job_id: JobId
    target: str
    arch: str
    queue: str


@dataclass(frozen=True)
class NewBuild:
    build_id: BuildId
    source: str
    profile: str
    features: list[str]
    all_features: bool
    no_default_features: bool
    cargo_args: list[str]
    timeout_s: int
    jobs: list[NewJob]


@dataclass(frozen=True)
class JobRecord:
    """A job with the build fields a worker needs; what the store hands the use-cases."""

    view: JobView
    build_id: BuildId
    manifest: Manifest | None


def _job_view(job: _Job) -> JobView:
    return JobView(
        job_id=job.id,
        target=job.target,
        arch=job.arch,
        queue=job.queue,
        state=BuildState(job.state),
        attempt=job.attempt,
        worker=job.worker,
        mode=BuildMode(job.mode) if job.mode else None,
        consumed_from=job.consumed_from,
        queued_at=job.queued_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        exit_code=job.exit_code,
        reason=job.reason,
    )


def _build_view(build: _Build) -> BuildView:
    jobs = [_job_view(job) for job in build.jobs]
    return BuildView(
        build_id=build.id,
        state=overall_state(job.state for job in jobs),
        created_at=build.created_at,
        source=build.source,
        profile=build.profile,
        features=build.features,
        all_features=build.all_features,
        no_default_features=build.no_default_features,
        cargo_args=build.cargo_args,
        jobs=jobs,
    )


class Store:
    """Builds and jobs in a relational database."""

    def __init__(self, database_url: str) -> None:
        self._engine = _create_engine(database_url)
        _Base.metadata.create_all(self._engine)

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
            profile=new.profile,
            features=new.features,
            all_features=new.all_features,
            no_default_features=new.no_default_features,
            cargo_args=new.cargo_args,
            timeout_s=new.timeout_s,
            jobs=[
                _Job(
                    id=job.job_id, target=job.target, arch=job.arch, queue=job.queue,
                    state=BuildState.QUEUED.value, attempt=1, queued_at=now,
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

    def build_settings(self, build_id: BuildId) -> dict[str, Any]:
        """The request fields a job message repeats (profile, features, args, timeout)."""
        with self._session() as session:
            build = session.get(_Build, build_id)
            if build is None:
                raise NotFound(f"no build {build_id}")
            return {
                "source": build.source,
                "profile": build.profile,
                "features": build.features,
                "all_features": build.all_features,
                "no_default_features": build.no_default_features,
                "cargo_args": build.cargo_args,
                "timeout_s": build.timeout_s,
            }

    def job(self, job_id: JobId) -> JobRecord:
        with self._session() as session:
            job = session.get(_Job, job_id)
            if job is None:
                raise NotFound(f"no job {job_id}")
            manifest = Manifest.model_validate(job.manifest) if job.manifest else None
            return JobRecord(view=_job_view(job), build_id=BuildId(job.build_id), manifest=manifest)

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

    def jobs_of(self, build_id: BuildId) -> list[JobRecord]:
        with self._session() as session:
            ids = session.scalars(select(_Job.id).where(_Job.build_id == build_id)).all()
        return [self.job(JobId(job_id)) for job_id in ids]

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
