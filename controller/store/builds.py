"""The builds: what was asked for, once, with the jobs it became."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

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


def _build_view(build: BuildRow) -> BuildView:
    jobs = [job_view(job) for job in build.jobs]
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
                    wait_limit_s=job.wait_limit_s, sent_at=created,
                )
                for job in new.jobs
            ],
        )
        with self._db.session() as session:
            session.add(build)
        return _build_view(build)

    def get(self, build_id: BuildId, tenant: str | None = None) -> BuildView:
        """A build; with `tenant`, only that tenant's (another's is as absent as one never
        submitted, so ids tell nothing)."""
        with self._db.session() as session:
            return _build_view(self._row(session, build_id, tenant))

    def settings(self, build_id: BuildId, target: str) -> BuildSettings:
        """What a job message of `target` repeats from its build."""
        with self._db.session() as session:
            build = self._row(session, build_id)
            # No values left means none were given or every job has ended (the job store
            # drops them then): a message sent after that is for a job that can no
            # longer start, so it goes without them.
            env = self._vault.open(build.env_sealed, build_id) if build.env_sealed else {}
            return BuildSettings(
                source=SourceDigest(build.source),
                cargo=CargoSpec.model_validate(build.cargo),
                timeout_s=build.timeout_s,
                env={**env.get("all", {}), **env.get(target, {})},
            )

    @staticmethod
    def _row(session: Session, build_id: BuildId, tenant: str | None = None) -> BuildRow:
        build = session.get(BuildRow, build_id)
        if build is None or (tenant is not None and build.tenant != tenant):
            raise NotFound(f"no build {build_id}")
        return build

    def newest(self, submitter: str | None, state: BuildState | None, limit: int,
               tenant: str | None = None) -> list[BuildView]:
        """The newest builds first, optionally only one tenant's, one submitter's or in
        one state."""
        query = select(BuildRow).order_by(BuildRow.created_at.desc())
        if tenant is not None:
            query = query.where(BuildRow.tenant == tenant)
        if submitter is not None:
            query = query.where(BuildRow.submitter == submitter)
        # A build's state is derived from its jobs, so filter after reading a bounded window.
        with self._db.session() as session:
            views = [_build_view(b) for b in session.scalars(query.limit(max(limit, 1) * 20))]
        return [v for v in views if state is None or v.state is state][:limit]
