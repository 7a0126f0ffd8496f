"""Counts the metrics read at scrape time: the jobs not yet ended, grouped, and each
queue's backlog. Both read only unended jobs through the state index, so a scrape costs
what the backlog is, never what the history is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text

from crossfarm.controller.store.schema import Database, JobRow, as_utc
from crossfarm.shared.states import BuildState

_UNENDED = [state.value for state in BuildState if not state.terminal]


@dataclass(frozen=True)
class JobCount:
    """How many unended jobs share a state, an architecture, a queue, a mode and a tenant."""

    state: str
    arch: str
    queue: str
    #: the mode a worker started it in; None while queued (the queue's mode applies)
    mode: str | None
    tenant: str
    count: int


@dataclass(frozen=True)
class Backlog:
    """One queue's queued jobs (held by the placer or sent) and its oldest one's queueing."""

    queue: str
    depth: int
    oldest: datetime


class CensusStore:
    """Read-only counts for /metrics and the readiness probe."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def unended(self) -> list[JobCount]:
        with self._db.session() as session:
            rows = session.execute(
                select(JobRow.state, JobRow.arch, JobRow.queue, JobRow.mode, JobRow.tenant,
                       func.count())
                .where(JobRow.state.in_(_UNENDED))
                .group_by(JobRow.state, JobRow.arch, JobRow.queue, JobRow.mode, JobRow.tenant)
            ).all()
        return [JobCount(state, arch, queue, mode, tenant, count)
                for state, arch, queue, mode, tenant, count in rows]

    def backlogs(self) -> list[Backlog]:
        with self._db.session() as session:
            rows = session.execute(
                select(JobRow.queue, func.count(), func.min(JobRow.queued_at))
                .where(JobRow.state == BuildState.QUEUED.value).group_by(JobRow.queue)
            ).all()
        return [Backlog(queue, count, as_utc(oldest)) for queue, count, oldest in rows
                if oldest is not None]

    def ping(self) -> None:
        """One round trip to the database; raises whatever the driver raises if it fails."""
        with self._db.session() as session:
            session.execute(text("SELECT 1"))
