"""The placer: run every few seconds by the controller, and at once when a job may start
(a submit, a finished job, a new worker), it keeps every accepted job on its way. The
record is the truth, not the broker:

- a queued job is *held* until a worker has a free slot for it: per queue, the online
  workers' concurrency less the jobs already sent there or running. Free slots go to
  tenants in fair order (the fewest jobs running or sent on that architecture first,
  each tenant's oldest job first), never past a tenant's `running_per_arch`;
- a held job moves to a queue some worker serves, fails past its wait limit, and says
  what it waits for, written only when that changes (its place in line is counted
  when the build is read);
- a sent job whose message the broker lost (Redis restarted or flushed) is held again;
- a running job whose lease lapsed (its worker is lost, or no longer lists it in its
  heartbeats) is re-run under a new attempt, up to max_attempts.

Every move of a sent or running job bumps the attempt (the fencing token), so a message
or worker of an older attempt can no longer start, finish or publish. Held jobs are
handled as groups (queue, placement, tenant), one statement each, so a tick's cost
follows what changed, not how many jobs wait.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from crossfarm.controller import affinity, fleet, jobs
from crossfarm.controller.farm import Farm
from crossfarm.controller.fleet import Roster
from crossfarm.controller.placement import Decision, decide, replan, waiting_for
from crossfarm.controller.store.jobs import HeldGroup, JobRecord, Moved, Outcome
from crossfarm.shared import keys
from crossfarm.shared.arch import Arch, BuildMode, Placement
from crossfarm.shared.ids import JobId
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import Event, WorkerState

#: what a held job waits for when every slot of its queue is taken
BUSY = "queued: waiting for a free worker"
#: the last turn of a tenant never served: before any other
_NEVER = datetime.min.replace(tzinfo=UTC)


def tick(farm: Farm, now: datetime | None = None) -> None:
    """One pass: sent and running jobs first (a re-run or a lost message joins the held
    ones), then the held jobs: moved, dispatched, told what they wait for."""
    now = now or datetime.now(UTC)
    workers = fleet.roster(farm, now)
    flight = farm.store.jobs.in_flight()
    moved: set[JobId] = set()
    for record in flight:
        if _check_in_flight(farm, record, workers, now):
            moved.add(record.view.job_id)
    for record in farm.store.jobs.overdue(now):
        _fail_overdue(farm, record)
        moved.add(record.view.job_id)
    Dispatch(farm, workers, [r for r in flight if r.view.job_id not in moved], now).run()


def _check_in_flight(farm: Farm, record: JobRecord, workers: Roster, now: datetime) -> bool:
    """Re-run a running job that lost its lease; move a sent one that no worker will
    take. True if it moved."""
    job = record.view
    if job.state is BuildState.RUNNING:
        return _check_lease(farm, record, workers, now)
    waited = (now - job.queued_at).total_seconds()
    better = replan(job.queue, job.arch, job.placement, workers.served, waited,
                    farm.settings.pickup_bound_s)
    if better is None:
        better = _unrouted(farm, record, workers, now)
    if better is None and _message_lost(farm, record, workers, now):
        better = Decision(mode=job.queue.mode, queue=job.queue,
                          placed=f"{job.placed} (re-sent: the broker lost it)")
    if better is None:
        return False
    jobs.resend(farm, record, better)
    return True


def _check_lease(farm: Farm, record: JobRecord, workers: Roster, now: datetime) -> bool:
    job = record.view
    worker = workers.workers.get(job.worker or "")
    if worker is not None and workers.states[worker.name] is not WorkerState.LOST:
        since = (now - (job.started_at or now)).total_seconds()
        silent = (now - worker.last_seen).total_seconds() > 2 * worker.info.interval_s + 1
        task = keys.task_id(job.job_id, job.attempt)
        if task in worker.info.running or since < farm.settings.lease_grace_s or silent:
            return False  # a silent worker's list is stale: wait until it is lost or speaks
        why = f"worker {job.worker} no longer runs it (its build process died)"
    else:
        why = f"worker {job.worker} was lost"
    if job.attempt >= farm.settings.max_attempts:
        jobs.finish(farm, job.job_id, job.attempt, Outcome(
            BuildState.FAILED, reason=f"{why}; gave up after {job.attempt} attempts"))
        return True
    jobs.rerun(farm, record, decide(job.arch, job.placement, workers.served), why)
    return True


def _unrouted(farm: Farm, record: JobRecord, workers: Roster, now: datetime
              ) -> Decision | None:
    """Move a job sent to a worker's own queue (affinity) to the shared queue if that
    worker went away or did not start it within the affinity bound. (Its next attempt
    goes to no worker in particular: see Dispatch._affinity.)"""
    job, worker = record.view, record.routed_to
    if worker is None:
        return None
    bound = farm.settings.affinity_wait_s
    if workers.states.get(worker) is not WorkerState.ONLINE:
        why = "went away before it started the job"
    elif (now - (record.sent_at or now)).total_seconds() > bound:
        why = f"did not start it within the {bound:g} s affinity bound"
    else:
        return None
    return Decision(mode=job.queue.mode, queue=job.queue,
                    placed=f"any {job.arch.value} worker: {worker}, which keeps this "
                           f"project's warm target dir, {why}")


def _message_lost(farm: Farm, record: JobRecord, workers: Roster, now: datetime) -> bool:
    """Its queue is empty, no worker runs it, and it was sent long enough ago."""
    job = record.view
    sent = record.sent_at or job.queued_at
    if (now - sent).total_seconds() < farm.settings.reconcile_after_s:
        return False
    if keys.task_id(job.job_id, job.attempt) in workers.active:
        return False
    queue = (job.queue.name if record.routed_to is None
             else keys.worker_queue(job.queue, record.routed_to))
    return farm.events.queue_depth(queue) == 0


def _fail_overdue(farm: Farm, record: JobRecord) -> None:
    job = record.view
    jobs.finish(farm, job.job_id, job.attempt, Outcome(
        BuildState.FAILED,
        reason=f"no worker started it within its wait limit of {job.wait_limit_s} s "
               f"({job.waiting or 'waiting'})"))


@dataclass
class Dispatch:
    """The held jobs' part of one tick: what the fleet can take, who gets it."""

    farm: Farm
    workers: Roster
    flight: list[JobRecord]
    now: datetime
    #: jobs sent or running, per queue
    busy: Counter[keys.QueueKey] = field(default_factory=Counter)
    #: jobs sent or running, per (architecture, tenant): a tenant's share of the fleet
    share: Counter[tuple[Arch, str]] = field(default_factory=Counter)
    #: when each contested (architecture, tenant) was last given a slot
    turn: dict[tuple[Arch, str], datetime] = field(default_factory=dict)

    def run(self) -> None:
        self.busy.update(r.view.queue for r in self.flight)
        self.share.update((r.view.arch, r.tenant) for r in self.flight)
        groups = self.farm.store.jobs.held_groups()
        if not groups:
            return
        if self._replan(groups):
            groups = self.farm.store.jobs.held_groups()
        refused = self._dispatch(groups)
        self._tell_waiting(groups, refused)

    def _free(self, queue: keys.QueueKey) -> int:
        return max(0, self.workers.slots.get(queue, 0) - self.busy[queue])

    def _limit(self, tenant: str) -> int | None:
        return self.farm.settings.quota_for(tenant).running_per_arch

    def _at_limit(self, arch: Arch, tenant: str) -> bool:
        limit = self._limit(tenant)
        return limit is not None and self.share[(arch, tenant)] >= limit

    def _replan(self, groups: list[HeldGroup]) -> bool:
        """Move held jobs off a queue no online worker serves, and those past the pickup
        bound on a busy native queue, where placement allows. True if any moved."""
        served = self.workers.served
        bound = self.farm.settings.pickup_bound_s
        oldest: dict[tuple[keys.QueueKey, Placement], datetime] = {}
        for group in groups:
            key = (group.queue, group.placement)
            oldest[key] = min(oldest.get(key, group.oldest), group.oldest)
        any_moved = False
        for (queue, placement), first in sorted(oldest.items()):
            waited = (self.now - first).total_seconds()
            better = replan(queue, queue.arch, placement, served, waited, bound)
            if better is None:
                continue
            if served.serves(queue.arch, queue.mode):
                if self._free(queue):
                    continue  # a native slot is free: the oldest start here this tick
                before: datetime | None = self.now - timedelta(seconds=bound)
            else:
                before = None
            moved = self.farm.store.jobs.move_held(queue, placement, better.queue,
                                                   better.placed, queued_before=before)
            self._tell(moved, f"crossfarm: {better.placed}")
            any_moved = any_moved or bool(moved)
        return any_moved

    def _dispatch(self, groups: list[HeldGroup]) -> set[keys.QueueKey]:
        """Claim and send as many held jobs as each queue has free slots, in fair order
        across tenants. Returns the queues whose sends the broker refused."""
        tenants: dict[keys.QueueKey, set[str]] = {}
        for group in groups:
            tenants.setdefault(group.queue, set()).add(group.tenant)
        wanted: dict[tuple[keys.QueueKey, str], int] = {}
        for queue, names in tenants.items():
            free = self._free(queue)
            for tenant in names if free else ():
                limit = self._limit(tenant)
                room = free if limit is None else min(free, limit - self.share[(queue.arch,
                                                                                 tenant)])
                if room > 0:
                    wanted[(queue, tenant)] = room
        if not wanted:
            return set()
        heads: dict[tuple[keys.QueueKey, str], list[JobRecord]] = {}
        for record in self.farm.store.jobs.next_held(wanted):
            heads.setdefault((record.view.queue, record.tenant), []).append(record)
        contested = [(queue.arch, tenant) for queue, tenant in heads
                     if sum(1 for q, _ in heads if q.arch is queue.arch) > 1]
        self.turn = self.farm.store.jobs.last_sent(contested)
        chosen = [record for queue in sorted(tenants) for record in self._fair(queue, heads)]
        routes = self._affinity(chosen)
        chosen = [r for r in chosen if not routes.get(r.view.job_id, affinity.ANY).hold]
        claimed = self.farm.store.jobs.claim(chosen, self.now)
        held = jobs.send(self.farm, claimed, routes)
        refused = {record.view.queue for record in held}
        unsent = {record.view.job_id for record in held}
        self.busy.update(r.view.queue for r in claimed if r.view.job_id not in unsent)
        return refused

    def _affinity(self, chosen: list[JobRecord]) -> dict[JobId, affinity.Choice]:
        """Where each chosen job goes (affinity.choose); held back: those waiting for
        the busy worker that keeps their project's warm dir. A job's later attempts go
        anywhere: it was re-run or re-sent, perhaps from that very worker."""
        if not any(w.info.warm for w in self.workers.workers.values()) or not chosen:
            return {}
        free = affinity.free_slots(self.workers, self.flight)
        builds = self.farm.store.builds.settings_of([(r.build_id, r.view.target)
                                                     for r in chosen])
        routes = {}
        for record in chosen:
            job, build = record.view, builds[(record.build_id, record.view.target)]
            key = (keys.affinity_key(record.tenant, build.project, job.target,
                                     build.cargo.profile)
                   if build.project and job.attempt == 1 else None)
            choice = affinity.choose(key, job.queue, self.workers, free,
                                     (self.now - job.queued_at).total_seconds(),
                                     self.farm.settings.affinity_wait_s)
            if choice.worker is not None:
                free[choice.worker] -= 1
            routes[job.job_id] = choice
        return routes

    def _fair(self, queue: keys.QueueKey, heads: dict[tuple[keys.QueueKey, str],
                                                      list[JobRecord]]) -> list[JobRecord]:
        """Up to the queue's free slots, one job at a time to the tenant with the fewest
        jobs running or sent on the architecture, skipping a tenant at its limit. Among
        equals, the one served longest ago goes first (else a flood submitted first
        would win every slot one worker frees), then the oldest job. Counts the picks
        into `share` and `turn`."""
        lines = {tenant: records for (q, tenant), records in heads.items() if q == queue}
        picked: list[JobRecord] = []
        for _ in range(self._free(queue)):
            ready = [t for t, line in lines.items()
                     if line and not self._at_limit(queue.arch, t)]
            if not ready:
                break
            tenant = min(ready, key=lambda t: (self.share[(queue.arch, t)],
                                               self.turn.get((queue.arch, t), _NEVER),
                                               lines[t][0].view.queued_at, t))
            picked.append(lines[tenant].pop(0))
            self.share[(queue.arch, tenant)] += 1
            self.turn[(queue.arch, tenant)] = self.now
        return picked

    def _tell_waiting(self, groups: list[HeldGroup], refused: set[keys.QueueKey]) -> None:
        """Write what each group of held jobs waits for where it changed, and tell each
        changed job's stream. A queue the broker refused keeps the broker's text."""
        texts: dict[tuple[keys.QueueKey, Placement, str], set[str | None]] = {}
        for group in groups:
            texts.setdefault((group.queue, group.placement, group.tenant), set()).add(
                group.waiting)
        for (queue, placement, tenant), now_told in sorted(texts.items()):
            if queue in refused:
                continue
            text = self._waiting(queue, placement, tenant)
            if now_told == {text}:
                continue
            changed = self.farm.store.jobs.tell_waiting(queue, placement, tenant, text)
            self._tell(changed, f"crossfarm: {text}", if_streamed=True)

    def _waiting(self, queue: keys.QueueKey, placement: Placement, tenant: str) -> str:
        arch = queue.arch
        if not self.workers.served.serves(arch, queue.mode):
            if queue.mode is BuildMode.NATIVE:
                return waiting_for(arch, placement)
            return f"waiting: no worker online serves {queue}"
        limit = self._limit(tenant)
        if limit is not None and self.share[(arch, tenant)] >= limit:
            return f"waiting: tenant {tenant} at its {limit}-job {arch.value} limit"
        return BUSY

    def _tell(self, moved: list[Moved], line: str, if_streamed: bool = False) -> None:
        for job in moved:
            jobs.tell(self.farm, job.build_id, Event(kind="log", target=job.target, line=line),
                      if_streamed)
