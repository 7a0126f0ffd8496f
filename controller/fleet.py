"""The fleet: workers register and heartbeat; the controller says who is online and
how deep each architecture's backlog is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from crossfarm.controller.farm import Farm
from crossfarm.controller.placement import Capacity
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
    return HeartbeatReply(drain=farm.store.workers.heartbeat(name, info, fresh_start),
                          lost_after_s=farm.settings.lost_after_s)


def set_drain(farm: Farm, name: str, drain: bool) -> WorkerView:
    """Ask a worker to stop taking jobs (it finishes its running ones), or to resume."""
    farm.store.workers.set_drain(name, drain)
    return next(w for w in fleet(farm).workers if w.name == name)


def _leases_of(info: WorkerHeartbeat, jobs: set[JobId]) -> WorkerHeartbeat:
    """The heartbeat with only the leases ("<job id>-<attempt>") of these jobs."""
    return info.model_copy(update={"running": [
        lease for lease in info.running if lease.rpartition("-")[0] in jobs]})


def capacity(farm: Farm, now: datetime | None = None) -> Capacity:
    """What the online workers serve (at `now`, by default the present)."""
    return Capacity.from_queues(
        w.info.queues for w in fleet(farm, now).workers if w.state is WorkerState.ONLINE)


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
    oldest = farm.store.jobs.oldest_queued()
    served = Capacity.from_queues(v.info.queues for v in views if v.state is WorkerState.ONLINE)
    arches = [
        ArchSummary(
            arch=arch, queue=keys.QueueKey(arch),
            workers_online=served.online.get(keys.QueueKey(arch), 0),
            cross_workers=served.online.get(keys.QueueKey(arch, BuildMode.CROSS), 0),
            emulating_workers=served.online.get(
                keys.QueueKey(arch, BuildMode.EMULATED), 0),
            queue_depth=sum(farm.events.queue_depth(keys.QueueKey(arch, mode).name)
                            for mode in BuildMode),
            oldest_waiting=oldest.get(arch),
        )
        for arch in Arch
    ]
    return Fleet(workers=views, arches=arches)
