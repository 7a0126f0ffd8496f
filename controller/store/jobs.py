"""The jobs: each state change is one conditional UPDATE (`WHERE state = current AND
attempt = attempt`), so two racing reports cannot both win and a stale attempt cannot
overwrite a newer one. The placer's reads are one query each, whatever the backlog.

The move that ends a build's last job also drops the sealed values of the build's
variables, in the same transaction: no job of it can run again, so nothing needs them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from crossfarm.controller.store.schema import (
    DEFAULT_TENANT,
    BuildRow,
    Database,
    JobRow,
    as_utc,
    now,
)
from crossfarm.shared.arch import Arch, BuildMode, Placement
from crossfarm.shared.errors import NotFound
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.states import BuildState, transition
from crossfarm.shared.wire import JobView, Manifest

#: Rows per IN (…) list, to stay under SQL parameter limits.
_CHUNK = 500
_TERMINAL = [state.value for state in BuildState if state.terminal]


@dataclass(frozen=True)
class JobRecord:
    """A job with the build fields a worker needs; what the store hands the use-cases."""

    view: JobView
    build_id: BuildId
    manifest: Manifest | None
    sent_at: datetime | None = None
    tenant: str = DEFAULT_TENANT


@dataclass(frozen=True)
class Outcome:
    """How a job ended: a terminal state and what the worker (or the controller) says of it."""

    state: BuildState
    exit_code: int | None = None
    reason: str | None = None
    manifest: Manifest | None = None


def job_view(job: JobRow) -> JobView:
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


def _record(job: JobRow) -> JobRecord:
    manifest = Manifest.model_validate(job.manifest) if job.manifest else None
    return JobRecord(view=job_view(job), build_id=BuildId(job.build_id), manifest=manifest,
                     sent_at=job.sent_at, tenant=job.tenant)


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

    def running(self) -> list[JobRecord]:
        return self._where(JobRow.state == BuildState.RUNNING.value)

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

    def oldest_queued(self) -> dict[Arch, datetime]:
        """Architecture -> when its longest-waiting queued job was queued."""
        with self._db.session() as session:
            rows = session.execute(
                select(JobRow.arch, func.min(JobRow.queued_at))
                .where(JobRow.state == BuildState.QUEUED.value).group_by(JobRow.arch)
            ).all()
        return {Arch(arch): as_utc(when) for arch, when in rows if when is not None}

    def start(self, job_id: JobId, attempt: int, worker: str | None = None,
              mode: BuildMode | None = None, consumed_from: str | None = None
              ) -> JobView | None:
        """Move a queued job to running on `worker`. None if another move won the race or
        `attempt` is stale; IllegalTransition if the job is past starting."""
        return self._move(job_id, attempt, BuildState.RUNNING, {
            "worker": worker, "mode": mode.value if mode else None,
            "consumed_from": consumed_from})

    def finish(self, job_id: JobId, attempt: int, outcome: Outcome) -> JobView | None:
        """Move a job to its outcome's state. None if another move won the race or
        `attempt` is stale; IllegalTransition for a move the state machine forbids."""
        manifest = outcome.manifest.model_dump(mode="json") if outcome.manifest else None
        return self._move(job_id, attempt, outcome.state, {
            "exit_code": outcome.exit_code, "reason": outcome.reason, "manifest": manifest})

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
        """Move a queued job to another queue under a new attempt number, so the message
        left in the old queue is refused when a worker picks it up. None if the job
        moved on (started, cancelled or requeued) in the meantime."""
        with self._db.session() as session:
            moved = self._update(session, job_id, BuildState.QUEUED, attempt, {
                "attempt": attempt + 1, "queue": queue.name, "placed": placed,
                "waiting": None, "sent_at": now()})
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
                "consumed_from": None, "started_at": None, "sent_at": now()})
        return self.get(job_id).view if moved else None

    def set_waiting(self, waiting: dict[JobId, str | None]) -> list[JobId]:
        """Record, per queued job id, what it is waiting for; returns the ids whose text
        changed. One transaction: one read of the current texts, one batched UPDATE of
        the rows that differ."""
        ids = list(waiting)
        with self._db.session() as session:
            current: dict[str, str | None] = {}
            for start in range(0, len(ids), _CHUNK):
                rows = session.execute(select(JobRow.id, JobRow.waiting).where(
                    JobRow.id.in_(ids[start:start + _CHUNK]),
                    JobRow.state == BuildState.QUEUED.value))
                current.update({job_id: text for job_id, text in rows})
            changed = [job_id for job_id in ids
                       if job_id in current and current[job_id] != waiting[job_id]]
            if changed:
                # On the connection, not the session: one statement run for many rows.
                session.connection().execute(
                    update(JobRow).where(JobRow.id == bindparam("job_id"),
                                         JobRow.state == BuildState.QUEUED.value)
                    .values(waiting=bindparam("text")),
                    [{"job_id": job_id, "text": waiting[job_id]} for job_id in changed])
        return changed
