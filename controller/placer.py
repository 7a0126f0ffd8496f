"""The placer: run every few seconds by the controller, it keeps every accepted job on
its way. The record is the truth, not the broker:

- a queued job goes where some worker can take it, fails past its wait limit, and
  says what it waits for;
- a queued job whose message the broker lost (Redis restarted or flushed) is re-sent;
- a running job whose lease lapsed (its worker is lost, or no longer lists it in its
  heartbeats) is re-run under a new attempt, up to max_attempts.

Every move bumps the attempt (the fencing token), so a message or worker of an older
attempt can no longer start, finish or publish.
"""

from __future__ import annotations

from datetime import UTC, datetime

from crossfarm.controller import fleet, jobs
from crossfarm.controller.farm import Farm
from crossfarm.controller.placement import Capacity, Decision, decide, replan, waiting_for
from crossfarm.controller.store.jobs import JobRecord, Outcome
from crossfarm.shared import keys
from crossfarm.shared.ids import JobId
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import Event, Fleet, WorkerState


def tick(farm: Farm, now: datetime | None = None) -> None:
    """One pass: running jobs first (a re-run joins the queue), then queued ones."""
    now = now or datetime.now(UTC)
    view = fleet.fleet(farm, now)
    served = Capacity.from_queues(
        w.info.queues for w in view.workers if w.state is WorkerState.ONLINE)
    for record in farm.store.jobs.running():
        _check_lease(farm, record, view, served, now)
    _place_queued(farm, view, served, now)


def _check_lease(farm: Farm, record: JobRecord, view: Fleet, served: Capacity,
                 now: datetime) -> None:
    job = record.view
    worker = next((w for w in view.workers if w.name == job.worker), None)
    task = keys.task_id(job.job_id, job.attempt)
    if worker is not None and worker.state is not WorkerState.LOST:
        since = (now - (job.started_at or now)).total_seconds()
        silent = (now - worker.last_seen).total_seconds() > 2 * worker.info.interval_s + 1
        if task in worker.info.running or since < farm.settings.lease_grace_s or silent:
            return  # a silent worker's list is stale: wait until it is lost or speaks
        why = f"worker {job.worker} no longer runs it (its build process died)"
    else:
        why = f"worker {job.worker} was lost"
    if job.attempt >= farm.settings.max_attempts:
        jobs.finish(farm, job.job_id, job.attempt, Outcome(
            BuildState.FAILED, reason=f"{why}; gave up after {job.attempt} attempts"))
        return
    jobs.rerun(farm, record, decide(job.arch, job.placement, served), why)


def _place_queued(farm: Farm, view: Fleet, served: Capacity, now: datetime) -> None:
    active = {task for w in view.workers for task in w.info.running}
    depth: dict[keys.QueueKey, int] = {}
    waiting: dict[JobId, str | None] = {}
    line: dict[keys.QueueKey, int] = {}
    queued = {record.view.job_id: record for record in farm.store.jobs.queued()}
    for record in queued.values():
        job = record.view
        waited = (now - job.queued_at).total_seconds()
        if job.wait_limit_s is not None and waited > job.wait_limit_s:
            jobs.finish(farm, job.job_id, job.attempt, Outcome(
                BuildState.FAILED,
                reason=f"no worker started it within its wait limit of {job.wait_limit_s} s "
                       f"({job.waiting or 'waiting'})"))
            continue
        arch = job.arch
        better = replan(job.queue, arch, job.placement, served, waited,
                        farm.settings.pickup_bound_s)
        if better is None and _message_lost(farm, record, active, depth, now):
            better = Decision(mode=job.queue.mode, queue=job.queue,
                              placed=f"{job.placed} (re-sent: the broker lost it)")
        if better is not None:
            jobs.resend(farm, record, better)
            continue
        line[job.queue] = line.get(job.queue, 0) + 1
        position = f"position {line[job.queue]} in {job.queue}"
        if served.serves(arch, job.queue.mode):
            waiting[job.job_id] = f"queued: {position}"
        else:
            waiting[job.job_id] = f"{waiting_for(arch, job.placement)}; {position}"
    for job_id in farm.store.jobs.set_waiting(waiting):
        record = queued[job_id]
        jobs.tell(farm, record.build_id, Event(kind="log", target=record.view.target,
                                               line=f"crossfarm: {waiting[job_id]}"))


def _message_lost(farm: Farm, record: JobRecord, active: set[str], depth: dict[keys.QueueKey, int],
                  now: datetime) -> bool:
    """Its queue is empty, no worker runs it, and it was sent long enough ago."""
    job = record.view
    sent = record.sent_at or job.queued_at
    if (now - sent).total_seconds() < farm.settings.reconcile_after_s:
        return False
    if keys.task_id(job.job_id, job.attempt) in active:
        return False
    if job.queue not in depth:
        depth[job.queue] = farm.events.queue_depth(job.queue.name)
    return depth[job.queue] == 0
