"""The jobs: each state change is one conditional UPDATE (`WHERE state = current AND
attempt = attempt`), so two racing reports cannot both win and a stale attempt cannot
overwrite a newer one.

A queued job is *held* (`sent_at` is NULL) until the placer claims it for a free slot and
sends its message; the placer works on held jobs as sets, one statement per group
(queue, placement, tenant), never one per job, so a tick costs what changed, not how
many wait.

The move that ends a build's last job also drops the sealed values of the build's
variables, in the same transaction: no job of it can run again, so nothing needs them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, literal, select, union_all, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from crossfarm.controller.store.schema import (
    DEFAULT_TENANT,
    BuildRow,
    Database,
    JobRow,
    as_utc,
    chunks,
    now,
)
from crossfarm.shared.arch import Arch, BuildMode, Placement
from crossfarm.shared.errors import NotFound
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.states import BuildState, transition
from crossfarm.shared.wire import CargoReuse, JobView, Manifest, TestCounts

_TERMINAL = [state.value for state in BuildState if state.terminal]
#: a queued job the placer has not sent yet
_HELD = (JobRow.state == BuildState.QUEUED.value) & JobRow.sent_at.is_(None)


@dataclass(frozen=True)
class JobRecord:
    """A job with the build fields a worker needs; what the store hands the use-cases."""

    view: JobView
    build_id: BuildId
    manifest: Manifest | None
    sent_at: datetime | None = None
    tenant: str = DEFAULT_TENANT
    #: sha256 of the current attempt's lease secret; None until a worker starts it
    lease_hash: str | None = None
    #: the worker whose own queue the current attempt went to (see keys.worker_queue)
    routed_to: str | None = None


@dataclass(frozen=True)
class Outcome:
    """How a job ended: a terminal state and what the worker (or the controller) says of it."""

    state: BuildState
    exit_code: int | None = None
    reason: str | None = None
    manifest: Manifest | None = None
    reuse: CargoReuse | None = None


@dataclass(frozen=True)
class HeldGroup:
    """Held jobs that share a queue, a placement, a tenant and a waiting text."""

    queue: QueueKey
    placement: Placement
    tenant: str
    waiting: str | None
    count: int
    oldest: datetime


@dataclass(frozen=True)
class JobTiming:
    """When a job a worker ran was queued, started and (if it has) finished."""

    arch: Arch
    queued_at: datetime
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Moved:
    """A job a set-based move changed: whose stream to tell."""

    job_id: JobId
    build_id: BuildId
    target: str


def job_view(job: JobRow, position: int | None = None) -> JobView:
    """`position`: a held job's place in line, appended to what it waits for."""
    waiting = job.waiting
    if position is not None:
        waiting = f"{waiting or 'queued'}; position {position} in {job.queue}"
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
        waiting=waiting,
        wait_limit_s=job.wait_limit_s,
        queued_at=job.queued_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        exit_code=job.exit_code,
        reason=job.reason,
        cached_from=BuildId(job.cached_from) if job.cached_from else None,
        tests=(TestCounts.model_validate(job.manifest["tests"])
               if job.manifest and job.manifest.get("tests") else None),
        rustc=job.manifest.get("rustc") if job.manifest else None,
        reuse=CargoReuse.model_validate(job.reuse) if job.reuse else None,
    )


def _record(job: JobRow) -> JobRecord:
    manifest = Manifest.model_validate(job.manifest) if job.manifest else None
    return JobRecord(view=job_view(job), build_id=BuildId(job.build_id), manifest=manifest,
                     sent_at=job.sent_at, tenant=job.tenant, lease_hash=job.lease_hash,
                     routed_to=job.routed_to)


class JobStore:
    """Jobs: read one, a build's, or every queued or running one; move them along."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, job_id: JobId) -> JobRecord:
        with self._db.session() as session:
            job = session.get(JobRow, job_id)
            if job is None:
                raise NotFound(f"no job {job_id}")
            return _record(job)

    def of_build(self, build_id: BuildId) -> list[JobRecord]:
        return self._where(JobRow.build_id == build_id)

    def queued(self) -> list[JobRecord]:
        """Every queued job, oldest first."""
        return self._where(JobRow.state == BuildState.QUEUED.value,
                           order=(JobRow.queued_at, JobRow.id))

    def cached(self, tenant: str, inputs: str, image_ids: Iterable[str]) -> JobRecord | None:
        """The newest succeeded job of `tenant`'s with these inputs, built by a worker
        (not itself served from the cache) with one of these builder images; None if
        there is none."""
        images = sorted(set(image_ids))
        if not images:
            return None
        with self._db.session() as session:
            row = session.scalars(
                select(JobRow).where(
                    JobRow.tenant == tenant, JobRow.inputs == inputs,
                    JobRow.state == BuildState.SUCCEEDED.value, JobRow.cached_from.is_(None),
                    JobRow.manifest.is_not(None), JobRow.image_id.in_(images))
                .order_by(JobRow.finished_at.desc(), JobRow.id.desc()).limit(1)).first()
            return _record(row) if row is not None else None

    def running(self) -> list[JobRecord]:
        return self._where(JobRow.state == BuildState.RUNNING.value)

    def in_flight(self) -> list[JobRecord]:
        """The jobs a worker holds or will take next: running, or queued and sent. As many
        as the fleet has slots (plus what lost workers left), whatever the backlog."""
        return self._where((JobRow.state == BuildState.RUNNING.value)
                           | ((JobRow.state == BuildState.QUEUED.value)
                              & JobRow.sent_at.is_not(None)))

    def overdue(self, at: datetime) -> list[JobRecord]:
        """Queued jobs past their wait limit at `at`."""
        return self._where((JobRow.state == BuildState.QUEUED.value) & (JobRow.deadline < at))

    def held_groups(self) -> list[HeldGroup]:
        """The held jobs, counted per queue, placement, tenant and waiting text."""
        with self._db.session() as session:
            rows = session.execute(
                select(JobRow.queue, JobRow.placement, JobRow.tenant, JobRow.waiting,
                       func.count(), func.min(JobRow.queued_at))
                .where(_HELD).group_by(JobRow.queue, JobRow.placement, JobRow.tenant,
                                       JobRow.waiting)).all()
        return [HeldGroup(queue=QueueKey.parse(queue), placement=Placement(placement),
                          tenant=tenant, waiting=waiting, count=count, oldest=as_utc(oldest))
                for queue, placement, tenant, waiting, count, oldest in rows]

    def next_held(self, wanted: dict[tuple[QueueKey, str], int]) -> list[JobRecord]:
        """Per (queue, tenant), its oldest `n` held jobs: one statement, each part read
        off the index in order."""
        parts = [
            select(JobRow.id).where(_HELD, JobRow.queue == queue.name, JobRow.tenant == tenant)
            .order_by(JobRow.queued_at, JobRow.id).limit(n).subquery().select()
            for (queue, tenant), n in sorted(wanted.items()) if n > 0
        ]
        if not parts:
            return []
        return self._where(JobRow.id.in_(union_all(*parts).scalar_subquery()),
                           order=(JobRow.queued_at, JobRow.id))

    def last_sent(self, pairs: Iterable[tuple[Arch, str]]) -> dict[tuple[Arch, str], datetime]:
        """When a job of each (architecture, tenant) was last sent: one statement, each
        part an index seek (the tenant's history is not read)."""
        parts = [
            select(literal(arch.value).label("arch"), literal(tenant).label("tenant"),
                   func.max(JobRow.sent_at).label("sent"))
            .where(JobRow.arch == arch.value, JobRow.tenant == tenant)
            for arch, tenant in sorted(set(pairs))
        ]
        if not parts:
            return {}
        with self._db.session() as session:
            rows = session.execute(union_all(*parts)).all()
        return {(Arch(arch), tenant): as_utc(sent) for arch, tenant, sent in rows
                if sent is not None}

    def claim(self, records: Sequence[JobRecord], at: datetime) -> list[JobRecord]:
        """Mark held jobs sent at `at`, before their messages go: the ones still held come
        back. Rows another controller holds are skipped (SKIP LOCKED on PostgreSQL; SQLite
        has one writer), and the UPDATE re-checks that each is still held."""
        by_id = {record.view.job_id: record for record in records}
        claimed: list[JobRecord] = []
        ids = list(by_id)
        for chunk in chunks(ids):
            with self._db.session() as session:
                free = session.scalars(select(JobRow.id).where(JobRow.id.in_(chunk), _HELD)
                                       .with_for_update(skip_locked=True)).all()
                if not free:
                    continue
                won = session.scalars(
                    update(JobRow).where(JobRow.id.in_(free), _HELD)
                    .values(sent_at=at, waiting=None).returning(JobRow.id)
                    .execution_options(synchronize_session=False)).all()
            claimed += [replace(by_id[JobId(job_id)], sent_at=at) for job_id in won]
        return claimed

    def route(self, job_id: JobId, attempt: int, worker: str | None, placed: str) -> bool:
        """Say where a claimed job's message goes (`worker`'s own queue; None: the shared
        one) and why; False if it moved on."""
        with self._db.session() as session:
            result = session.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.attempt == attempt,
                                     JobRow.state == BuildState.QUEUED.value)
                .values(routed_to=worker, placed=placed)
                .execution_options(synchronize_session=False))
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def unclaim(self, job_id: JobId, attempt: int, sent_at: datetime, waiting: str) -> bool:
        """Hold a claimed job again, as its message could not be sent (`waiting` says
        why); False if it moved on."""
        with self._db.session() as session:
            result = session.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.attempt == attempt,
                                     JobRow.state == BuildState.QUEUED.value,
                                     JobRow.sent_at == sent_at)
                .values(sent_at=None, waiting=waiting, routed_to=None)
                .execution_options(synchronize_session=False))
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def move_held(self, queue: QueueKey, placement: Placement, to: QueueKey, placed: str,
                  queued_before: datetime | None = None) -> list[Moved]:
        """Move the held jobs of one queue and placement (those queued before
        `queued_before`, if given) to another queue. No attempt changes: no message of
        the current attempt was ever sent."""
        where = [_HELD, JobRow.queue == queue.name, JobRow.placement == placement.value]
        if queued_before is not None:
            where.append(JobRow.queued_at < queued_before)
        return self._update_held(where, {"queue": to.name, "placed": placed, "waiting": None})

    def tell_waiting(self, queue: QueueKey, placement: Placement, tenant: str, text: str
                     ) -> list[Moved]:
        """Set what the held jobs of one group wait for, on the rows whose text differs."""
        return self._update_held(
            [_HELD, JobRow.queue == queue.name, JobRow.placement == placement.value,
             JobRow.tenant == tenant, JobRow.waiting.is_distinct_from(text)],
            {"waiting": text})

    def _update_held(self, where: Iterable[ColumnElement[bool]], values: dict[str, Any]
                     ) -> list[Moved]:
        with self._db.session() as session:
            rows = session.execute(
                update(JobRow).where(*where).values(**values)
                .returning(JobRow.id, JobRow.build_id, JobRow.target)
                .execution_options(synchronize_session=False)).all()
        return [Moved(JobId(job_id), BuildId(build_id), target)
                for job_id, build_id, target in rows]

    def _where(self, criterion: ColumnElement[bool], order: tuple[Any, ...] = ()
               ) -> list[JobRecord]:
        with self._db.session() as session:
            rows = session.scalars(select(JobRow).where(criterion).order_by(*order)).all()
            return [_record(row) for row in rows]

    def running_by_worker(self) -> dict[str, list[JobId]]:
        """Worker name -> the ids of the jobs the record says it is running."""
        with self._db.session() as session:
            rows = session.execute(select(JobRow.worker, JobRow.id).where(
                JobRow.state == BuildState.RUNNING.value)).all()
        running: dict[str, list[JobId]] = {}
        for worker, job_id in rows:
            running.setdefault(worker or "", []).append(JobId(job_id))
        return running

    def timings(self, since: datetime, tenant: str | None = None) -> list[JobTiming]:
        """The jobs a worker started at or after `since` (one served from the result
        cache never starts), optionally only one tenant's, oldest start first."""
        query = (select(JobRow.arch, JobRow.queued_at, JobRow.started_at, JobRow.finished_at)
                 .where(JobRow.started_at >= since).order_by(JobRow.started_at))
        if tenant is not None:
            query = query.where(JobRow.tenant == tenant)
        with self._db.session() as session:
            rows = session.execute(query).all()
        return [JobTiming(Arch(arch), as_utc(queued), as_utc(started),
                          as_utc(finished) if finished is not None else None)
                for arch, queued, started, finished in rows if started is not None]

    def waiting_by_arch(self) -> dict[Arch, tuple[int, datetime]]:
        """Architecture -> how many of its jobs are queued (held or sent), and when the
        longest-waiting one was queued."""
        with self._db.session() as session:
            rows = session.execute(
                select(JobRow.arch, func.count(), func.min(JobRow.queued_at))
                .where(JobRow.state == BuildState.QUEUED.value).group_by(JobRow.arch)
            ).all()
        return {Arch(arch): (count, as_utc(when)) for arch, count, when in rows
                if when is not None}

    def start(self, job_id: JobId, attempt: int, worker: str | None = None,
              mode: BuildMode | None = None, consumed_from: str | None = None,
              lease_hash: str | None = None) -> JobView | None:
        """Move a queued job to running on `worker`, holding the lease whose secret hashes
        to `lease_hash`. None if another move won the race or `attempt` is stale;
        IllegalTransition if the job is past starting."""
        return self._move(job_id, attempt, BuildState.RUNNING, {
            "worker": worker, "mode": mode.value if mode else None,
            "consumed_from": consumed_from, "lease_hash": lease_hash})

    def finish(self, job_id: JobId, attempt: int, outcome: Outcome) -> JobView | None:
        """Move a job to its outcome's state. None if another move won the race or
        `attempt` is stale; IllegalTransition for a move the state machine forbids."""
        manifest = outcome.manifest.model_dump(mode="json") if outcome.manifest else None
        return self._move(job_id, attempt, outcome.state, {
            "exit_code": outcome.exit_code, "reason": outcome.reason, "manifest": manifest,
            "image_id": outcome.manifest.image_id if outcome.manifest else None,
            "reuse": outcome.reuse.model_dump(mode="json") if outcome.reuse else None})

    def _move(self, job_id: JobId, attempt: int, new: BuildState, values: dict[str, Any]
              ) -> JobView | None:
        with self._db.session() as session:
            job = session.get(JobRow, job_id)
            if job is None:
                raise NotFound(f"no job {job_id}")
            current = BuildState(job.state)
            transition(current, new)
            if new is BuildState.RUNNING:
                values["started_at"] = now()
            if new.terminal:
                values["finished_at"] = now()
                # Ends of one build's jobs take turns (a row lock on PostgreSQL; SQLite
                # has one writer anyway), so the last to end sees all the others ended.
                session.execute(select(BuildRow.id).where(BuildRow.id == job.build_id)
                                .with_for_update())
            if not self._update(session, job_id, current, attempt, values | {"state": new.value}):
                return None
            if new.terminal:
                self._forget_values_once_ended(session, BuildId(job.build_id))
        return self.get(job_id).view

    @staticmethod
    def _forget_values_once_ended(session: Session, build_id: BuildId) -> None:
        """Drop the sealed values of the build's variables if none of its jobs can run
        again; the names stay."""
        session.execute(
            update(BuildRow)
            .where(BuildRow.id == build_id, BuildRow.env_sealed.is_not(None),
                   ~exists().where(JobRow.build_id == build_id,
                                   JobRow.state.not_in(_TERMINAL)))
            .values(env_sealed=None)
            .execution_options(synchronize_session=False)
        )

    @staticmethod
    def _update(session: Session, job_id: JobId, current: BuildState, attempt: int,
                values: dict[str, Any]) -> bool:
        """The conditional UPDATE every move is: True if this one won."""
        result = session.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.state == current.value, JobRow.attempt == attempt)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def requeue(self, job_id: JobId, attempt: int, queue: QueueKey, placed: str
                ) -> JobView | None:
        """Hold a sent job again, on `queue`, under a new attempt number, so the message
        left in the broker is refused when a worker picks it up; the placer sends the new
        one. None if the job moved on (started, cancelled or requeued) in the meantime."""
        with self._db.session() as session:
            moved = self._update(session, job_id, BuildState.QUEUED, attempt, {
                "attempt": attempt + 1, "queue": queue.name, "placed": placed,
                "waiting": None, "sent_at": None, "lease_hash": None, "routed_to": None})
        return self.get(job_id).view if moved else None

    def retry(self, job_id: JobId, attempt: int, queue: QueueKey, placed: str
              ) -> JobView | None:
        """Put a running job back in the queue under attempt+1 (its worker was lost). The old
        attempt can no longer start, finish or publish. None if the job moved on."""
        transition(BuildState.RUNNING, BuildState.QUEUED)
        with self._db.session() as session:
            moved = self._update(session, job_id, BuildState.RUNNING, attempt, {
                "state": BuildState.QUEUED.value, "attempt": attempt + 1, "queue": queue.name,
                "placed": placed, "waiting": None, "worker": None, "mode": None,
                "consumed_from": None, "started_at": None, "sent_at": None,
                "lease_hash": None, "routed_to": None})
        return self.get(job_id).view if moved else None
