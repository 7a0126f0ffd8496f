"""The builds: what was asked for, once, with the jobs it became."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, lazyload

from crossfarm.controller.store.jobs import job_view
from crossfarm.controller.store.schema import DEFAULT_TENANT, BuildRow, Database, JobRow, now
from crossfarm.controller.store.vault import Vault
from crossfarm.shared.arch import Arch
from crossfarm.shared.errors import NotFound
from crossfarm.shared.ids import BuildId, JobId, SourceDigest
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.states import BuildState, overall_state
from crossfarm.shared.wire import BuildView, CargoSpec


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
    tenant: str = DEFAULT_TENANT


@dataclass(frozen=True)
class BuildSettings:
    """A build's settings as one of its jobs gets them: its own target's variables
    merged over the shared ones."""

    source: SourceDigest
    cargo: CargoSpec
    timeout_s: int
    env: dict[str, str]


def _build_view(build: BuildRow, positions: dict[str, int] | None = None) -> BuildView:
    jobs = [job_view(job, (positions or {}).get(job.id)) for job in build.jobs]
    return BuildView(
        build_id=BuildId(build.id),
        state=overall_state(job.state for job in jobs),
        created_at=build.created_at,
        source=SourceDigest(build.source),
        cargo=CargoSpec.model_validate(build.cargo),
        env_names=build.env_names,
        submitter=build.submitter,
        jobs=jobs,
    )


class BuildStore:
    """Builds: record one with its jobs, read one back, list the newest. The values of
    its variables are stored sealed by `vault`, their names in clear."""

    def __init__(self, db: Database, vault: Vault) -> None:
        self._db = db
        self._vault = vault

    def add(self, new: NewBuild) -> BuildView:
        created = now()
        build = BuildRow(
            id=new.build_id,
            created_at=created,
            source=new.source,
            cargo=new.cargo.model_dump(mode="json"),
            timeout_s=new.timeout_s,
            env_names=sorted({name for values in new.env.values() for name in values}),
            env_sealed=self._vault.seal(new.env) if any(new.env.values()) else None,
            submitter=new.submitter,
            tenant=new.tenant,
            jobs=[
                JobRow(
                    id=job.job_id, tenant=new.tenant, target=job.target, arch=job.arch.value,
                    queue=job.queue.name,
                    state=BuildState.QUEUED.value, attempt=1, queued_at=created,
                    placement=job.placement, placed=job.placed, waiting=job.waiting,
                    wait_limit_s=job.wait_limit_s, sent_at=None,
                    deadline=(created + timedelta(seconds=job.wait_limit_s)
                              if job.wait_limit_s is not None else None),
                )
                for job in new.jobs
            ],
        )
        with self._db.session() as session:
            session.add(build)
        return _build_view(build)

    def get(self, build_id: BuildId) -> BuildView:
        """A build with each held job's place in line, counted now rather than stored, so
        a queue moving on rewrites no row."""
        with self._db.session() as session:
            build = self._row(session, build_id)
            positions = {job.id: self._position(session, job) for job in build.jobs
                         if job.state == BuildState.QUEUED.value and job.sent_at is None}
            return _build_view(build, positions)

    @staticmethod
    def _position(session: Session, job: JobRow) -> int:
        """1 + the held jobs of its queue queued before it."""
        ahead = session.scalar(select(func.count()).select_from(JobRow).where(
            JobRow.state == BuildState.QUEUED.value, JobRow.sent_at.is_(None),
            JobRow.queue == job.queue,
            or_(JobRow.queued_at < job.queued_at,
                and_(JobRow.queued_at == job.queued_at, JobRow.id < job.id))))
        return 1 + (ahead or 0)

    def settings(self, build_id: BuildId, target: str) -> BuildSettings:
        """What a job message of `target` repeats from its build."""
        return self.settings_of([(build_id, target)])[(build_id, target)]

    def settings_of(self, jobs: list[tuple[BuildId, str]]
                    ) -> dict[tuple[BuildId, str], BuildSettings]:
        """`settings` of many jobs in one read (the placer sends jobs in batches)."""
        ids = sorted({build_id for build_id, _ in jobs})
        with self._db.session() as session:
            builds = {b.id: b for b in session.scalars(
                select(BuildRow).where(BuildRow.id.in_(ids)).options(lazyload(BuildRow.jobs)))}
            missing = [build_id for build_id in ids if build_id not in builds]
            if missing:
                raise NotFound(f"no build {missing[0]}")
            # No values left means none were given or every job has ended (the job store
            # drops them then): a message sent after that is for a job that can no
            # longer start, so it goes without them.
            envs = {build_id: self._vault.open(b.env_sealed, BuildId(build_id))
                    if b.env_sealed else {} for build_id, b in builds.items()}
        return {
            (build_id, target): BuildSettings(
                source=SourceDigest(builds[build_id].source),
                cargo=CargoSpec.model_validate(builds[build_id].cargo),
                timeout_s=builds[build_id].timeout_s,
                env={**envs[build_id].get("all", {}), **envs[build_id].get(target, {})},
            )
            for build_id, target in jobs
        }

    @staticmethod
    def _row(session: Session, build_id: BuildId) -> BuildRow:
        build = session.get(BuildRow, build_id)
        if build is None:
            raise NotFound(f"no build {build_id}")
        return build

    def newest(self, submitter: str | None, state: BuildState | None, limit: int
               ) -> list[BuildView]:
        """The newest builds first, optionally only one submitter's or in one state."""
        query = select(BuildRow).order_by(BuildRow.created_at.desc())
        if submitter is not None:
            query = query.where(BuildRow.submitter == submitter)
        # A build's state is derived from its jobs, so filter after reading a bounded window.
        with self._db.session() as session:
            views = [_build_view(b) for b in session.scalars(query.limit(max(limit, 1) * 20))]
        return [v for v in views if state is None or v.state is state][:limit]
