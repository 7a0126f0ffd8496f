"""Affinity: a build goes back to the worker that keeps its project's warm target dir
(the worker's heartbeat lists them, hashed), if that worker has a free slot; while it is
busy the build waits up to a short bound, then any worker of its queue may take it.
Each choice comes with the sentence the job's record and log keep.

Pure: the placer gathers the workers and their free slots, this decides.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from crossfarm.controller.fleet import Roster
from crossfarm.controller.store.jobs import JobRecord
from crossfarm.shared import keys
from crossfarm.shared.ids import JobId, parse_job_id
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import WorkerState


@dataclass(frozen=True)
class Choice:
    """Where one job goes: a worker's own queue, or its shared queue; or not yet."""

    #: the worker whose own queue it goes to; None: the shared queue
    worker: str | None = None
    #: why (None: nothing to say, no worker keeps its project's dir)
    placed: str | None = None
    #: wait for the busy worker that keeps the dir (still within the bound)
    hold: bool = False


#: what nobody keeps a warm dir for goes where it would have gone
ANY = Choice()


def free_slots(workers: Roster, flight: list[JobRecord]) -> dict[str, int]:
    """Each online worker's free slots: its concurrency, less what it runs (by its
    heartbeat, or by the record if that knows more: a start is recorded before the next
    heartbeat lists it) and the jobs sent to its own queue that it has not started.
    A job its heartbeat lists that is no longer in flight has ended since: its slot is
    free now, not at the next heartbeat (which held a project's next build up to a
    heartbeat interval, seconds, behind the worker keeping its warm dir)."""
    routed: Counter[str] = Counter()
    running: Counter[str] = Counter()
    for record in flight:
        if record.routed_to and record.view.state is BuildState.QUEUED:
            routed[record.routed_to] += 1
        elif record.view.worker and record.view.state is BuildState.RUNNING:
            running[record.view.worker] += 1
    flying = {record.view.job_id for record in flight}
    return {name: max(0, w.info.concurrency - max(_listed(w.info.running, flying),
                                                  running[name]) - routed[name])
            for name, w in workers.workers.items()
            if workers.states[name] is WorkerState.ONLINE}


def _listed(tasks: list[str], flying: set[JobId]) -> int:
    """How many of a heartbeat's tasks still hold a slot: all but those of build jobs no
    longer in flight (a git fetch, or anything else it names, counts: it says it is busy)."""
    def ended(task: str) -> bool:
        try:
            return parse_job_id(keys.parse_task_id(task)[0]) not in flying
        except ValueError:
            return False
    return sum(1 for task in tasks if not ended(task))


def choose(key: str | None, queue: keys.QueueKey, workers: Roster, free: dict[str, int],
           waited_s: float, bound_s: float) -> Choice:
    """Where a job of affinity `key` (None: its request named no project) goes, having
    waited `waited_s`. Among the online workers serving its queue that keep the dir, the
    one with the most free slots (then by name)."""
    if key is None:
        return ANY
    keepers = sorted(name for name, w in workers.workers.items()
                     if name in free and key in w.info.warm and queue.name in w.info.queues)
    if not keepers:
        return ANY
    best = min(keepers, key=lambda name: (-free[name], name))
    if free[best] > 0:
        return Choice(worker=best, placed=f"affinity: worker {best} keeps this project's "
                                         "warm target dir and has a free slot")
    if waited_s < bound_s:
        return Choice(hold=True)
    return Choice(placed=f"any {queue.arch.value} worker: {', '.join(keepers)} keep(s) this "
                         f"project's warm target dir but stayed busy past the "
                         f"{bound_s:g} s affinity bound")
