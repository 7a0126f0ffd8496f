"""The fleet: workers register and heartbeat; the controller says who is online, how
many jobs each queue's online workers can run at once, and how deep each
architecture's backlog is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from crossfarm.controller.farm import Farm
from crossfarm.controller.placement import Capacity
from crossfarm.controller.store.workers import WorkerRecord
from crossfarm.shared import keys
from crossfarm.shared.arch import Arch, BuildMode
from crossfarm.shared.ids import JobId
from crossfarm.shared.wire import (
    ArchSummary,
    Fleet,
    HeartbeatReply,
    WorkerHeartbeat,
    WorkerState,
    WorkerView,
)


def worker_state(last_seen: datetime, now: datetime, lost_after_s: int,
                 requested: bool = False, confirmed: bool = False, running: int = 0
                 ) -> WorkerState:
    """Lost once no heartbeat arrived for `lost_after_s` seconds. Draining from the moment
    an operator asks (`requested`) or the worker says it stopped taking jobs
    (`confirmed`); drained only once the worker confirmed and no job runs on it."""
    if now - last_seen > timedelta(seconds=lost_after_s):
        return WorkerState.LOST
    if requested or confirmed:
        return WorkerState.DRAINED if confirmed and not running else WorkerState.DRAINING
    return WorkerState.ONLINE


def heartbeat(farm: Farm, name: str, info: WorkerHeartbeat, fresh_start: bool
              ) -> HeartbeatReply:
    """One row written, nothing read beyond it: a heartbeat never waits on placement."""
    drain = farm.store.workers.heartbeat(name, info, fresh_start)
    if fresh_start:
        farm.doorbell.ring()  # its slots are free now
    return HeartbeatReply(drain=drain, lost_after_s=farm.settings.lost_after_s)


def set_drain(farm: Farm, name: str, drain: bool) -> WorkerView:
    """Ask a worker to stop taking jobs (it finishes its running ones), or to resume."""
    farm.store.workers.set_drain(name, drain)
    farm.doorbell.ring()
    return next(w for w in fleet(farm).workers if w.name == name)


def _leases_of(info: WorkerHeartbeat, jobs: set[JobId]) -> WorkerHeartbeat:
    """The heartbeat with only the leases ("<job id>-<attempt>") of these jobs."""
    return info.model_copy(update={"running": [
        lease for lease in info.running if lease.rpartition("-")[0] in jobs]})


@dataclass(frozen=True)
class Roster:
    """The workers at one instant, as placement needs them: read from their heartbeats
    alone, never from the jobs."""

    workers: dict[str, WorkerRecord]
    states: dict[str, WorkerState]
    #: how many online workers serve each queue
    served: Capacity
    #: how many jobs the online workers serving each queue run at once, together
    slots: dict[keys.QueueKey, int]
    #: the task ids ("<job>-<attempt>") some worker not lost says it runs
    active: frozenset[str]
    #: the builder image ids the online workers serving each queue build with (emulated
    #: queues have none: a heartbeat names only the worker's own builder image)
    images: dict[keys.QueueKey, frozenset[str]]


def roster(farm: Farm, now: datetime | None = None) -> Roster:
    """The workers at `now` (by default the present)."""
    now = now or datetime.now(UTC)
    workers = {w.name: w for w in farm.store.workers.all()}
    # DRAINING and DRAINED differ only in the running jobs, which placement ignores.
    states = {w.name: worker_state(w.last_seen, now, farm.settings.lost_after_s,
                                   requested=w.drain, confirmed=w.info.draining)
              for w in workers.values()}
    online = [w for w in workers.values() if states[w.name] is WorkerState.ONLINE]
    slots: dict[keys.QueueKey, int] = {}
    for worker in online:
        for queue in worker.info.queues:
            try:
                key = keys.QueueKey.parse(queue)
            except ValueError:
                continue  # a queue this controller does not know: no slot for it
            slots[key] = slots.get(key, 0) + worker.info.concurrency
    return Roster(
        workers=workers, states=states,
        served=Capacity.from_queues(w.info.queues for w in online), slots=slots,
        active=frozenset(task for w in workers.values() if states[w.name] is not WorkerState.LOST
                         for task in w.info.running),
        images=_images(online))


def _images(online: list[WorkerRecord]) -> dict[keys.QueueKey, frozenset[str]]:
    """Queue -> the builder image ids its online workers report. An emulated build runs
    another image than the one a heartbeat names, so those queues get none."""
    images: dict[keys.QueueKey, set[str]] = {}
    for worker in online:
        # each toolchain's image too: the cache key names the toolchain, the image id
        # says the same compiler would build it again
        ids = {worker.info.builder_image_id} | {o.image_id for o in worker.info.toolchains}
        ids.discard(None)
        if not ids:
            continue
        for queue, mode in worker.info.queues.items():
            try:
                key = keys.QueueKey.parse(queue)
            except ValueError:
                continue
            if mode is not BuildMode.EMULATED:
                images.setdefault(key, set()).update(i for i in ids if i is not None)
    return {key: frozenset(ids) for key, ids in images.items()}


def capacity(farm: Farm, now: datetime | None = None) -> Capacity:
    """What the online workers serve (at `now`, by default the present)."""
    return roster(farm, now).served


def online_workers(farm: Farm, now: datetime | None = None) -> dict[str, WorkerHeartbeat]:
    """The online workers' heartbeats, by name."""
    workers = roster(farm, now)
    return {name: w.info for name, w in workers.workers.items()
            if workers.states[name] is WorkerState.ONLINE}


def fleet(farm: Farm, now: datetime | None = None, tenant: str | None = None) -> Fleet:
    """The workers and each architecture's backlog. With `tenant`, the jobs of other
    tenants are only counted, never named: their ids would lead to their builds."""
    now = now or datetime.now(UTC)
    running = farm.store.jobs.running_by_worker()
    owners = farm.store.usage.tenants_of(
        [job for jobs in running.values() for job in jobs]) if tenant is not None else {}

    def shown(jobs: list[JobId]) -> list[JobId]:
        return sorted(j for j in jobs if tenant is None or owners.get(j) == tenant)

    views = []
    for w in farm.store.workers.all():
        jobs = running.get(w.name, [])
        own = shown(jobs)
        views.append(WorkerView(
            name=w.name,
            state=worker_state(w.last_seen, now, farm.settings.lost_after_s,
                               requested=w.drain, confirmed=w.info.draining, running=len(jobs)),
            last_seen=w.last_seen, started_at=w.started_at, running_jobs=own,
            other_tenants_jobs=len(jobs) - len(own), drain_requested=w.drain,
            info=w.info if tenant is None else _leases_of(w.info, set(own))))
    waiting = farm.store.jobs.waiting_by_arch()
    served = Capacity.from_queues(v.info.queues for v in views if v.state is WorkerState.ONLINE)
    arches = [
        ArchSummary(
            arch=arch, queue=keys.QueueKey(arch),
            workers_online=served.online.get(keys.QueueKey(arch), 0),
            cross_workers=served.online.get(keys.QueueKey(arch, BuildMode.CROSS), 0),
            emulating_workers=served.online.get(
                keys.QueueKey(arch, BuildMode.EMULATED), 0),
            queue_depth=waiting[arch][0] if arch in waiting else 0,
            oldest_waiting=waiting[arch][1] if arch in waiting else None,
        )
        for arch in Arch
    ]
    return Fleet(workers=views, arches=arches)
