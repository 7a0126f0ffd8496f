"""The builds: what was asked for, once, with the jobs it became."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.orm import Session, lazyload

from crossfarm.controller.store.group_commit import Failed, GroupCommit, prepare_then_batch
from crossfarm.controller.store.jobs import JobRecord, job_view
from crossfarm.controller.store.schema import (
    DEFAULT_TENANT,
    BuildRow,
    Database,
    JobRow,
    Kept,
    as_utc,
    now,
)
from crossfarm.controller.store.vault import Vault
from crossfarm.shared.arch import Arch, Placement
from crossfarm.shared.errors import InvalidRequest, NotFound
from crossfarm.shared.ids import BuildId, JobId, SourceDigest, parse_build_id
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.states import BuildState, born, overall_state
from crossfarm.shared.wire import BuildView, CargoSpec, JobView

log = logging.getLogger(__name__)


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
    #: the result cache's key for its inputs (None: it can never be served or serve)
    inputs: str | None = None
    #: served from the result cache: the earlier succeeded job whose artifacts it gets;
    #: it is born succeeded and no worker runs it
    served: JobRecord | None = None


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
    project: str | None = None
    #: the tenant's queued quota: the build is recorded only if its jobs to run keep the
    #: tenant's unended jobs within it, counted in the transaction that records it
    queued_limit: int | None = None


class OverQueuedQuota(Exception):
    """Recording the build would take its tenant's unended jobs past its queued quota;
    nothing of it was recorded. `used`: the tenant's unended jobs as the transaction that
    refused it counted them (the builds recorded before it in that transaction included)."""

    def __init__(self, used: int, limit: int, jobs: int) -> None:
        super().__init__(f"the tenant has {used} unended jobs and its queued quota is "
                         f"{limit}: this build's {jobs} would pass it")
        self.used = used
        self.limit = limit
        self.jobs = jobs


@dataclass(frozen=True)
class BuildSettings:
    """A build's settings as one of its jobs gets them: its own target's variables
    merged over the shared ones."""

    source: SourceDigest
    cargo: CargoSpec
    timeout_s: int
    env: dict[str, str]
    project: str | None = None


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


def _new_view(new: NewBuild, build: dict[str, Any], jobs: list[dict[str, Any]],
              positions: dict[str, int]) -> BuildView:
    """A build just recorded, as `get` would read it back, made from the rows this store
    inserted: not through ORM instances, nor validated again (every value is one the
    request's validation or this store made), which took a tenth of a submit's time. A
    test holds it equal to the view read back."""
    asked = {job.job_id: job for job in new.jobs}
    views = []
    for row in jobs:
        job = asked[row["id"]]
        position = positions.get(job.job_id)
        waiting = row["waiting"]
        if position is not None:
            waiting = f"{waiting or 'queued'}; position {position} in {job.queue.name}"
        manifest = job.served.manifest if job.served is not None else None
        views.append(JobView.model_construct(
            job_id=job.job_id, target=job.target, arch=job.arch, queue=job.queue,
            state=BuildState(row["state"]),
            attempt=row["attempt"], worker=None, mode=None, consumed_from=None,
            placement=Placement(job.placement), placed=row["placed"], waiting=waiting,
            wait_limit_s=row["wait_limit_s"], queued_at=row["queued_at"], started_at=None,
            finished_at=row.get("finished_at"), exit_code=row.get("exit_code"), reason=None,
            cached_from=row.get("cached_from"),
            tests=manifest.tests if manifest is not None else None,
            rustc=manifest.rustc if manifest is not None else None, reuse=None))
    return BuildView.model_construct(
        build_id=new.build_id, state=overall_state(view.state for view in views),
        created_at=build["created_at"], source=new.source, cargo=new.cargo,
        env_names=build["env_names"], submitter=new.submitter, jobs=views)


def _new_job(job: NewJob, build_id: BuildId, tenant: str, created: datetime
             ) -> dict[str, Any]:
    """A job's row as it is born: queued (held for the placer), or succeeded with the
    artifacts of the earlier job the result cache serves it."""
    row: dict[str, Any] = dict(
        id=job.job_id, build_id=build_id, tenant=tenant, target=job.target,
        arch=job.arch.value, queue=job.queue.name, state=born(BuildState.QUEUED).value,
        attempt=1, queued_at=created, placement=job.placement, placed=job.placed,
        waiting=job.waiting, wait_limit_s=job.wait_limit_s, sent_at=None, inputs=job.inputs,
        deadline=(created + timedelta(seconds=job.wait_limit_s)
                  if job.wait_limit_s is not None else None),
    )
    served = job.served
    if served is not None:
        if served.manifest is None:
            raise ValueError(f"job {served.view.job_id} has no artifacts to serve")
        row.update(state=born(BuildState.SUCCEEDED).value, waiting=None, deadline=None,
                   finished_at=created, exit_code=0,
                   manifest=served.manifest.model_dump(mode="json"),
                   image_id=served.manifest.image_id, cached_from=served.build_id)
    return row


_HELD_IN = (JobRow.state == BuildState.QUEUED.value, JobRow.sent_at.is_(None),
            JobRow.queue == bindparam("queue"))
#: The held jobs of a queue queued from one instant to another, in line order (at the
#: same instant, the smaller id first), each with the count of those queued before the
#: first instant (a subquery run once). Built once: building it per read cost a submit
#: more than running it.
_LINE = (select(JobRow.id,
                select(func.count()).select_from(JobRow)
                .where(*_HELD_IN, JobRow.queued_at < bindparam("first")).scalar_subquery())
         .where(*_HELD_IN, JobRow.queued_at.between(bindparam("first"), bindparam("last")))
         .order_by(JobRow.queued_at, JobRow.id))


@dataclass(frozen=True)
class _NewRows:
    """A new build's row and its jobs' rows, and what its tenant's queued quota counts."""

    build: dict[str, Any]
    jobs: list[dict[str, Any]]
    #: its jobs a worker will run (not those served from the result cache)
    to_run: int
    limit: int | None


_UNENDED = [state.value for state in BuildState if not state.terminal]


def _insert(session: Session, builds: Sequence[_NewRows]
            ) -> list[dict[str, int] | OverQueuedQuota]:
    """Many builds with their jobs, in a few plain INSERTs (the ORM's unit of work doubled
    the time a submit held the database's one writer, SQLite's, and a statement per
    build as much again under a burst); for each build, its held jobs' places in line
    as of this transaction, or OverQueuedQuota for one its tenant's quota refuses (in
    the order given, each counting those recorded before it)."""
    used = _unended(session, {rows.build["tenant"] for rows in builds if rows.limit is not None})
    outcomes: list[OverQueuedQuota | None] = []
    for rows in builds:
        tenant = rows.build["tenant"]
        if rows.limit is not None and used[tenant] + rows.to_run > rows.limit:
            outcomes.append(OverQueuedQuota(used[tenant], rows.limit, rows.to_run))
            continue
        if tenant in used:
            used[tenant] += rows.to_run
        outcomes.append(None)
    recorded = [rows for rows, refused in zip(builds, outcomes, strict=True) if refused is None]
    if recorded:
        session.execute(insert(cast(Table, BuildRow.__table__)),
                        [rows.build for rows in recorded])
        # (one statement per shape of row: a job served from the cache has more columns)
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for rows in recorded:
            for job in rows.jobs:
                shapes.setdefault(tuple(sorted(job)), []).append(job)
        for same in shapes.values():
            session.execute(insert(cast(Table, JobRow.__table__)), same)
    places = iter([_places(session, [(job["id"], job["queue"], job["queued_at"])
                                     for job in rows.jobs
                                     if job["state"] == BuildState.QUEUED.value])
                   for rows in recorded])
    return [next(places) if refused is None else refused for refused in outcomes]


def _unended(session: Session, tenants: set[str]) -> dict[str, int]:
    """Each tenant's jobs accepted and not ended, as a quota counts them in the
    transaction that records new ones. Every build of a controller is recorded by its one
    group, one transaction at a time, and every other write only ends jobs, so on SQLite
    (one controller) the count holds until the commit. PostgreSQL may have several
    controllers: each tenant's transaction-scoped advisory lock is taken first (in one
    order: no deadlock), so a second one counts only once the first committed."""
    if not tenants:
        return {}
    ordered = sorted(tenants)
    if session.get_bind().dialect.name == "postgresql":
        for tenant in ordered:
            session.execute(select(func.pg_advisory_xact_lock(
                func.hashtextextended(f"crossfarm queued quota {tenant}", 0))))
    counts = {tenant: count for tenant, count in session.execute(
        select(JobRow.tenant, func.count()).where(JobRow.tenant.in_(ordered),
                                                  JobRow.state.in_(_UNENDED))
        .group_by(JobRow.tenant))}
    return {tenant: int(counts.get(tenant, 0)) for tenant in ordered}


def _places(session: Session, held: Iterable[tuple[str, str, datetime]]) -> dict[str, int]:
    """Each held job's (id, queue, queued_at) place in line: 1 + the held jobs of its
    queue queued before it (at the same instant, with a smaller id). One statement per
    queue, whatever the number of jobs: the few held jobs queued between the earliest
    and the latest given, in order, with the count of those before them. A statement per
    job, each counting the whole line ahead, took 44 % of a submit's time 10,000 jobs
    deep. A job no longer held when the line is read (sent meanwhile) has no place."""
    spans: dict[str, tuple[datetime, datetime]] = {}
    for _, queue, at in held:
        first, last = spans.get(queue, (at, at))
        spans[queue] = (min(first, at), max(last, at))
    # (Core, not the ORM's execute: a read needs none of its bookkeeping)
    connection = session.connection()
    places: dict[str, int] = {}
    for queue, (first, last) in spans.items():
        line = connection.execute(_LINE, {"queue": queue, "first": first, "last": last})
        places.update({job_id: 1 + before + n for n, (job_id, before) in enumerate(line)})
    return {job_id: places[job_id] for job_id, _, _ in held if job_id in places}


class BuildStore:
    """Builds: record one with its jobs, read one back, list them a page at a time. The values of
    its variables are stored sealed by `vault`, their names in clear."""

    def __init__(self, db: Database, vault: Vault) -> None:
        self._db = db
        self._vault = vault
        # Views as `get` last read them, with their tenant, until a build or job is written
        # (a job's place in line moves with the others'): status reads by the hundred.
        self._views: Kept[BuildId, tuple[str, BuildView]] = Kept(
            db.clock, (BuildRow.__tablename__, JobRow.__tablename__))
        self._inserts: GroupCommit[_NewRows, dict[str, int] | OverQueuedQuota] = GroupCommit(
            db, _insert)

    def add(self, new: NewBuild) -> BuildView:
        """Record a build (see add_many); raises OverQueuedQuota, or what recording it
        raised."""
        [outcome] = self.add_many([new])
        if isinstance(outcome, Failed):
            raise outcome.error
        return outcome

    def add_many(self, news: Sequence[NewBuild]) -> list[BuildView | Failed]:
        """Record builds, in order, committed with the other builds of the moment in one
        transaction, which checks each one's queued quota and counts its held jobs'
        places in line too: an answer needs no read after it. Each build is recorded
        whole and answered with its view, or refused alone: Failed with OverQueuedQuota,
        or with what recording it raised."""
        outcomes: list[tuple[_NewRows, dict[str, int] | OverQueuedQuota] | Failed] = (
            prepare_then_batch(news, self._rows, self._inserts.write_many))
        answers: list[BuildView | Failed] = []
        for new, outcome in zip(news, outcomes, strict=True):
            if isinstance(outcome, Failed):  # making its rows (sealing its values) or
                answers.append(outcome)  # recording them raised
                continue
            rows, places = outcome
            answers.append(Failed(places) if isinstance(places, OverQueuedQuota)
                           else _new_view(new, rows.build, rows.jobs, places))
        return answers

    def _rows(self, new: NewBuild) -> _NewRows:
        created = now()
        to_run = [job for job in new.jobs if job.served is None]
        build: dict[str, Any] = dict(
            id=new.build_id,
            created_at=created,
            source=new.source,
            cargo=new.cargo.model_dump(mode="json"),
            timeout_s=new.timeout_s,
            env_names=sorted({name for values in new.env.values() for name in values}),
            # No job to run (each one served from the cache): nothing will need the values.
            env_sealed=self._vault.seal(new.env) if to_run and any(new.env.values()) else None,
            submitter=new.submitter,
            tenant=new.tenant,
            project=new.project,
        )
        jobs = [_new_job(job, new.build_id, new.tenant, created)
                for job in sorted(new.jobs, key=lambda job: job.target)]  # as views list them
        return _NewRows(build=build, jobs=jobs, to_run=len(to_run), limit=new.queued_limit)

    def close(self) -> None:
        """Refuse new builds; return once every one accepted is committed or refused."""
        self._inserts.close()
        if self._inserts.batches:
            log.info("group commit: %d builds recorded in %d transactions",
                     self._inserts.writes, self._inserts.batches)

    def get(self, build_id: BuildId, tenant: str | None = None) -> BuildView:
        """A build with each held job's place in line, counted now rather than stored, so
        a queue moving on rewrites no row. With `tenant`, only that tenant's (another's is
        as absent as one never submitted, so ids tell nothing)."""
        view = self.kept(build_id, tenant)
        if view is not None:
            return view
        stamp = self._views.stamp()
        with self._db.session() as session:
            build = self._row(session, build_id)
            view = _build_view(build, self._positions(session, build.jobs))
        self._views.keep(stamp, build_id, (build.tenant, view))
        return self._scoped(build_id, build.tenant, view, tenant)

    def kept(self, build_id: BuildId, tenant: str | None = None) -> BuildView | None:
        """`get`'s answer if it needs no read (nothing written since it last read this
        build), else None; NotFound as `get` for another tenant's build."""
        kept = self._views.get(build_id)
        return self._scoped(build_id, *kept, tenant) if kept is not None else None

    @staticmethod
    def _scoped(build_id: BuildId, owner: str, view: BuildView, tenant: str | None
                ) -> BuildView:
        if tenant is not None and owner != tenant:
            raise NotFound(f"no build {build_id}")
        return view

    @staticmethod
    def _positions(session: Session, jobs: list[JobRow]) -> dict[str, int]:
        """Each held job's place in line, counted now rather than stored."""
        return _places(session, [(job.id, job.queue, job.queued_at) for job in jobs
                                 if job.state == BuildState.QUEUED.value and job.sent_at is None])

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
                project=builds[build_id].project,
            )
            for build_id, target in jobs
        }

    @staticmethod
    def _row(session: Session, build_id: BuildId, tenant: str | None = None) -> BuildRow:
        build = session.get(BuildRow, build_id)
        if build is None or (tenant is not None and build.tenant != tenant):
            raise NotFound(f"no build {build_id}")
        return build

    def page(self, limit: int, after: ListCursor | None = None, submitter: str | None = None,
             state: BuildState | None = None, tenant: str | None = None,
             arch: Arch | None = None) -> BuildPage:
        """Up to `limit` builds, newest first, after `after` (the previous page's cursor);
        optionally only one tenant's, one submitter's, those in one state, or those with
        a target of one architecture. Two statements whatever the depth: the page's
        builds, then their jobs."""
        query = select(BuildRow).order_by(BuildRow.created_at.desc(), BuildRow.id.desc())
        if after is not None:
            query = query.where(or_(
                BuildRow.created_at < after.created_at,
                and_(BuildRow.created_at == after.created_at, BuildRow.id < after.build_id)))
        if tenant is not None:
            query = query.where(BuildRow.tenant == tenant)
        if submitter is not None:
            query = query.where(BuildRow.submitter == submitter)
        if state is not None:
            query = query.where(in_state(state))
        if arch is not None:
            query = query.where(exists().where(JobRow.build_id == BuildRow.id,
                                               JobRow.arch == arch.value))
        with self._db.session() as session:
            # One more than asked says whether another page follows.
            rows = list(session.scalars(query.limit(limit + 1)))
            views = [_build_view(row) for row in rows[:limit]]
        more = len(rows) > limit
        last = views[-1] if more else None
        return BuildPage(builds=views, next=ListCursor(last.created_at, last.build_id)
                         if last is not None else None)


@dataclass(frozen=True)
class ListCursor:
    """Where a page of the build listing ended: its last build's (created_at, id), the
    key the listing is ordered by, so builds added meanwhile shift no page. On the wire
    an opaque token (`encode`/`parse`)."""

    created_at: datetime
    build_id: BuildId

    def encode(self) -> str:
        text = f"{as_utc(self.created_at).isoformat()}|{self.build_id}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def parse(cls, token: str) -> ListCursor:
        """The cursor a token stands for; InvalidRequest for one no page gave."""
        try:
            text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            stamp, build_id = text.split("|")
            created_at = datetime.fromisoformat(stamp)
            if created_at.tzinfo is None:
                raise ValueError("no time zone")
            # Converted here: a date at the calendar's edge overflows on the way to UTC.
            return cls(created_at.astimezone(UTC), parse_build_id(build_id))
        except (ValueError, OverflowError):  # binascii.Error, UnicodeDecodeError: ValueErrors
            raise InvalidRequest(
                f"after={token[:80]!r} is not a cursor this farm gave: pass the `next` "
                "link of the previous page as it is, or start again without `after`"
            ) from None


@dataclass(frozen=True)
class BuildPage:
    """One page of the build listing, and the cursor of the next (None: the last page)."""

    builds: list[BuildView]
    next: ListCursor | None


def in_state(state: BuildState) -> ColumnElement[bool]:
    """SQL true for a build whose jobs make it `state`, exactly as overall_state()
    decides it (a test holds the two equal over every small mix of job states)."""

    def having(*states: BuildState) -> ColumnElement[bool]:
        return exists().where(JobRow.build_id == BuildRow.id,
                              JobRow.state.in_([s.value for s in states]))

    def other_than(one: BuildState) -> ColumnElement[bool]:
        return exists().where(JobRow.build_id == BuildRow.id, JobRow.state != one.value)

    q, r = BuildState.QUEUED, BuildState.RUNNING
    active = having(q, r)
    match state:
        case BuildState.QUEUED:
            return and_(having(q), ~other_than(q))
        case BuildState.RUNNING:
            return or_(having(r), and_(having(q), other_than(q)))
        case BuildState.FAILED:
            return and_(having(BuildState.FAILED), ~active)
        case BuildState.CANCELLED:
            return and_(having(BuildState.CANCELLED), ~having(BuildState.FAILED), ~active)
        case BuildState.SUCCEEDED:
            return and_(having(BuildState.SUCCEEDED), ~other_than(BuildState.SUCCEEDED))
