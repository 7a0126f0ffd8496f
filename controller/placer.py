"""The placer: run every few seconds by the controller, it keeps queued jobs where some
worker can take them, fails those past their wait limit, and says what each waits for."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from crossfarm.controller import fleet
from crossfarm.controller.builds import enqueue, finish
from crossfarm.controller.farm import Farm
from crossfarm.controller.placement import replan, waiting_for
from crossfarm.shared.arch import Arch
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.keys import parse_queue
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import Event

log = logging.getLogger(__name__)


def tick(farm: Farm, now: datetime | None = None) -> None:
    """One pass over the queued jobs (oldest first)."""
    now = now or datetime.now(UTC)
    served = fleet.capacity(farm, now)
    waiting: dict[str, str | None] = {}
    line: dict[str, int] = {}
    for record in farm.store.queued_jobs():
        job = record.view
        waited = (now - job.queued_at).total_seconds()
        if job.wait_limit_s is not None and waited > job.wait_limit_s:
            finish(farm, JobId(job.job_id), job.attempt, BuildState.FAILED,
                   reason=f"no worker started it within its wait limit of {job.wait_limit_s} s "
                          f"({job.waiting or 'waiting'})")
            continue
        arch = Arch.parse(job.arch)
        better = replan(job.queue, arch, job.placement, served, waited,
                        farm.settings.pickup_bound_s)
        if better is not None:
            moved = farm.store.requeue(JobId(job.job_id), job.attempt, better.queue,
                                       better.placed)
            if moved is not None:
                log.info("job %s moved to %s: %s", job.job_id, better.queue, better.placed)
                enqueue(farm, BuildId(record.build_id), moved)
            continue
        line[job.queue] = line.get(job.queue, 0) + 1
        position = f"position {line[job.queue]} in {job.queue}"
        if served.serves(arch, parse_queue(job.queue)[1]):
            waiting[job.job_id] = f"queued: {position}"
        else:
            waiting[job.job_id] = f"{waiting_for(arch, job.placement)}; {position}"
    for job_id in farm.store.set_waiting(waiting):
        record = farm.store.job(JobId(job_id))
        farm.events.append(record.build_id, Event(kind="log", target=record.view.target,
                                                  line=f"crossfarm: {waiting[job_id]}"))

