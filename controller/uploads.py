"""Sweeping unfinished multipart uploads that no attempt will complete.

A worker whose upload was cut off (the object store went away, the worker died) leaves
its parts on the server, invisible as objects but taking space. The worker aborts its
own leftovers when it tries again; this sweep, run by the controller now and then,
catches the rest: an upload is kept only while the record says its attempt is running.
"""

from __future__ import annotations

import logging

from crossfarm.controller.farm import Farm
from crossfarm.shared.keys import parse_job_key
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import JobView

log = logging.getLogger(__name__)

#: Where attempts put their outputs (keys.job_prefix lives under it).
OUTPUTS = "builds/"


def may_finish(key: str, jobs: list[JobView]) -> bool:
    """Whether an unfinished upload to `key` may still be completed: its target's job
    runs the very attempt the key belongs to. Keys that are not attempt outputs, and
    builds the record does not know, have no attempt that could finish them."""
    try:
        _, target, attempt = parse_job_key(key)
    except ValueError:
        return False
    return any(job.target == target and job.attempt == attempt
               and job.state is BuildState.RUNNING for job in jobs)


def sweep(farm: Farm) -> int:
    """Abort every unfinished upload under builds/ that no running attempt owns;
    returns how many were aborted."""
    aborted = 0
    for upload in farm.storage.pending_uploads(OUTPUTS):
        try:
            build_id = parse_job_key(upload.key)[0]
        except ValueError:
            build_id = None
        jobs = [r.view for r in farm.store.jobs.of_build(build_id)] if build_id else []
        if not may_finish(upload.key, jobs):
            farm.storage.abort_upload(upload)
            aborted += 1
    if aborted:
        log.info("aborted %d unfinished upload(s) that no running attempt owns", aborted)
    return aborted
