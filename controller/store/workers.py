"""The workers: each one's last heartbeat and whether an operator asked it to drain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from crossfarm.controller.store.schema import Database, Kept, WorkerRow, insert_new, now
from crossfarm.shared.errors import NotFound
from crossfarm.shared.wire import WorkerHeartbeat


@dataclass(frozen=True)
class WorkerRecord:
    name: str
    info: WorkerHeartbeat
    started_at: datetime
    last_seen: datetime
    drain: bool = False


class WorkerStore:
    """Workers by name, as their heartbeats describe them."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Every submit and placer pass reads them; only heartbeats and drains write them.
        self._all: Kept[bool, list[WorkerRecord]] = Kept(db.clock, (WorkerRow.__tablename__,))

    def heartbeat(self, name: str, info: WorkerHeartbeat, fresh_start: bool,
                  at: datetime | None = None) -> bool:
        """Record a worker's heartbeat (heard `at`, by default now); `fresh_start` resets
        its start time. Returns whether an operator asked it to drain. One row, read and
        written by primary key: nothing the placer does makes it wait long."""
        seen = at or now()
        with self._db.session() as session:
            worker = session.get(WorkerRow, name)
            if worker is None:
                # The same first heartbeat may arrive twice at once (a retry): one row.
                insert_new(session, WorkerRow, [{
                    "name": name, "info": info.model_dump(mode="json"), "started_at": seen,
                    "last_seen": seen, "drain": False}])
                return False
            worker.info = info.model_dump(mode="json")
            worker.last_seen = seen
            if fresh_start:
                worker.started_at = seen
            return worker.drain

    def set_drain(self, name: str, drain: bool) -> None:
        with self._db.session() as session:
            worker = session.get(WorkerRow, name)
            if worker is None:
                raise NotFound(f"no worker {name!r}; crossfarm workers lists them")
            worker.drain = drain

    def all(self) -> list[WorkerRecord]:
        """Every worker that ever sent a heartbeat, by name."""
        kept = self._all.get(True)
        if kept is not None:
            return list(kept)
        stamp = self._all.stamp()
        with self._db.session() as session:
            rows = session.scalars(select(WorkerRow).order_by(WorkerRow.name)).all()
            records = [WorkerRecord(name=w.name, info=WorkerHeartbeat.model_validate(w.info),
                                    started_at=w.started_at, last_seen=w.last_seen,
                                    drain=w.drain)
                       for w in rows]
        self._all.keep(stamp, True, records)
        return list(records)
