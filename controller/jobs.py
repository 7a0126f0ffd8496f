"""The job lifecycle: send the jobs the placer claimed to their queues, let a worker
start one, record how it ended, re-run or move it; each move is told to the build's
live stream.

The use-cases of a build as a whole (submit, cancel, list, view) are in builds.py;
the placer decides when a job moves, this module moves it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Mapping

from crossfarm.controller.affinity import Choice
from crossfarm.controller.farm import Farm
from crossfarm.controller.placement import Decision
from crossfarm.controller.store.jobs import JobRecord, Outcome
from crossfarm.shared import keys
from crossfarm.shared.errors import BrokerError, Conflict, InvalidRequest
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.logs import job_context
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import (
    ArtifactEntry,
    Event,
    JobFinished,
    JobMessage,
    JobStarted,
    JobView,
    Manifest,
    StartVerdict,
)

log = logging.getLogger(__name__)


def tell(farm: Farm, build_id: BuildId, event: Event, if_streamed: bool = False) -> None:
    """Add to a build's live stream. The record is already updated, so a Redis outage
    only costs a live line: followers re-check the record and still see the end.
    `if_streamed`: only to a stream that exists, for news the record also keeps (what a
    held job waits for), so a build nobody follows costs no stream."""
    try:
        farm.events.append(build_id, event, if_exists=if_streamed)
    except BrokerError as exc:
        log.warning("event for %s not streamed: %s", build_id, exc.message)


#: what a held job waits for while its message cannot reach the broker
BROKER_AWAY = "queued: the broker is unreachable; the job is sent once it is back"


def send(farm: Farm, claimed: list[JobRecord],
         routes: Mapping[JobId, Choice] | None = None) -> list[JobRecord]:
    """Send the messages of jobs the placer claimed (marked sent in the record first, so
    no other placer sends them too), each to a worker's own queue where `routes` says so
    (affinity: the record and the build's log say which worker and why). If the broker
    is away, that job and the rest are held again and the next tick retries: an accepted
    build survives a Redis outage. Returns the jobs held again."""
    settings = farm.store.builds.settings_of([(r.build_id, r.view.target) for r in claimed])
    for index, record in enumerate(claimed):
        job = record.view
        build = settings[(record.build_id, job.target)]
        message = JobMessage(
            job_id=job.job_id, build_id=record.build_id, target=job.target,
            attempt=job.attempt, source=build.source, cargo=build.cargo,
            timeout_s=build.timeout_s, env=build.env,
            limits=farm.settings.tree_limits().to_wire(), tenant=record.tenant,
            project=build.project,
        )
        choice = (routes or {}).get(job.job_id)
        farm.metrics.sent(job, affinity=choice is not None and choice.worker is not None)
        if choice is not None and choice.placed is not None:
            farm.store.jobs.route(job.job_id, job.attempt, choice.worker, choice.placed)
            tell(farm, record.build_id, Event(kind="log", target=job.target,
                                              line=f"crossfarm: {choice.placed}"))
        try:
            farm.events.set_attempt(job.job_id, job.attempt)
            if choice is not None and choice.worker is not None:
                farm.queue.enqueue(message, job.queue, worker=choice.worker)
            else:
                farm.queue.enqueue(message, job.queue)
        except Exception as exc:  # the broker's errors are many; the record must say what happened
            log.warning("jobs stay queued: could not send %s to %s: %s",
                        job.job_id, job.queue, exc)
            held = claimed[index:]
            for other in held:
                assert other.sent_at is not None
                farm.store.jobs.unclaim(other.view.job_id, other.view.attempt, other.sent_at,
                                        waiting=BROKER_AWAY)
                if other.view.waiting != BROKER_AWAY:
                    tell(farm, other.build_id, Event(
                        kind="log", target=other.view.target,
                        line=f"crossfarm: the broker is unreachable ({exc}); the job stays "
                             f"queued and is sent once it is back"))
            return held
        if job.attempt > 1:
            # A first attempt is queued as every job starts: the events route opens each
            # stream with that from the record, so a build nobody watches costs no stream.
            tell(farm, record.build_id, Event(kind="state", target=job.target,
                                              state=BuildState.QUEUED))
    return []


def start(farm: Farm, job_id: JobId, report: JobStarted) -> StartVerdict:
    """A worker asks to start a job; only the current attempt of a queued job may."""
    record = farm.store.jobs.get(job_id)
    with job_context(build_id=record.build_id, job_id=job_id, attempt=report.attempt,
                     worker=report.worker, tenant=record.tenant):
        return _start(farm, record, report)


def _start(farm: Farm, record: JobRecord, report: JobStarted) -> StartVerdict:
    job_id = record.view.job_id
    if record.view.attempt != report.attempt:
        return StartVerdict(proceed=False, reason=f"attempt {report.attempt} is stale")
    if record.view.state is not BuildState.QUEUED:
        return StartVerdict(proceed=False, reason=f"job is {record.view.state.value}")
    lease = secrets.token_urlsafe(32)
    moved = farm.store.jobs.start(job_id, report.attempt, worker=report.worker,
                                  mode=report.mode, consumed_from=report.consumed_from,
                                  lease_hash=lease_hash(lease))
    if moved is None:
        return StartVerdict(proceed=False, reason="another report changed the job first")
    farm.metrics.started(moved, record.tenant)
    tell(farm, record.build_id, Event(kind="state", target=moved.target, state=BuildState.RUNNING))
    return StartVerdict(proceed=True, lease=lease)


def lease_hash(lease: str) -> str:
    """What the record keeps of a lease secret: its sha256 (32 random bytes need no slow
    hash), so a read of the database cannot report for a worker."""
    return hashlib.sha256(lease.encode()).hexdigest()


def report_finished(farm: Farm, job_id: JobId, report: JobFinished) -> JobView:
    """A worker reports how its attempt ended: only the worker holding that attempt's
    lease may, and a manifest must describe that attempt's own outputs."""
    record = farm.store.jobs.get(job_id)
    with job_context(build_id=record.build_id, job_id=job_id, attempt=report.attempt,
                     worker=report.worker, tenant=record.tenant):
        return _report_finished(farm, record, report)


def _report_finished(farm: Farm, record: JobRecord, report: JobFinished) -> JobView:
    job_id = record.view.job_id
    check_lease(record, report)
    if record.view.state is BuildState.CANCELLED:
        return record.view  # cancelled while it ran: the cancel stands
    if report.manifest is not None:
        check_manifest(record, report.attempt, report.manifest, farm.store.jobs.of_build)
    moved = finish(farm, job_id, report.attempt, Outcome(
        state=report.state, exit_code=report.exit_code, reason=report.reason,
        manifest=report.manifest, reuse=report.reuse))
    if moved is None:
        raise Conflict(f"job {job_id} attempt {report.attempt} is no longer current")
    return moved


def check_lease(record: JobRecord, report: JobFinished) -> None:
    """Conflict unless the report comes from the worker that started the job's current
    attempt: any other worker (or a stale attempt) holds no lease on it. Every worker
    shares one token and names are public, so only the secret its start was answered with
    proves the holder; the messages never repeat it."""
    job = record.view
    if report.attempt != job.attempt:
        raise Conflict(f"job {job.job_id} attempt {report.attempt} is stale: the job is at "
                       f"attempt {job.attempt}; this outcome is dropped")
    if job.worker is None:
        raise Conflict(f"job {job.job_id} attempt {job.attempt} was never started by a "
                       "worker; only the worker that starts it may report its outcome")
    if report.worker != job.worker:
        raise Conflict(f"job {job.job_id} attempt {job.attempt} is held by another worker, "
                       f"not {report.worker!r}; only its holder may report its outcome")
    if record.lease_hash is None or not hmac.compare_digest(
            lease_hash(report.lease), record.lease_hash):
        raise Conflict(f"job {job.job_id} attempt {job.attempt}: the lease sent is not the "
                       "one this attempt was started with; only the worker that started "
                       "this attempt may report it")


def check_manifest(record: JobRecord, attempt: int, manifest: Manifest,
                   of_build: Callable[[BuildId], list[JobRecord]]) -> None:
    """InvalidRequest unless the manifest names this job's attempt and every artifact key
    is that attempt's own key for its name (the wire model already holds each name to one
    plain file name), or the key of an identical artifact (same sha256 and size) that a
    succeeded job of the same tenant published (`of_build` reads a build's jobs): a
    forged manifest can neither point clients at another tenant's or an unpublished
    object nor make them write outside their directory."""
    job = record.view
    claimed = (manifest.build_id, manifest.job_id, manifest.target, manifest.attempt)
    if claimed != (record.build_id, job.job_id, job.target, attempt):
        raise InvalidRequest(f"the manifest names another job or attempt than job "
                             f"{job.job_id} ({job.target}) attempt {attempt}")
    names = [entry.name for entry in manifest.artifacts]
    if len(set(names)) != len(names):
        raise InvalidRequest("the manifest lists an artifact name twice")
    for entry in manifest.artifacts:
        if entry.key == keys.artifact_key(record.build_id, job.target, attempt, entry.name):
            continue
        if not _published_before(record.tenant, entry, of_build):
            raise InvalidRequest(
                f"artifact {entry.name!r}: its key is not under the attempt's own prefix "
                f"{keys.job_prefix(record.build_id, job.target, attempt)}artifacts/, nor "
                "that of an identical artifact a succeeded job of this tenant published")


def _published_before(tenant: str, entry: ArtifactEntry,
                      of_build: Callable[[BuildId], list[JobRecord]]) -> bool:
    """Whether `entry` names an object that a succeeded job of `tenant` uploaded itself
    and published with the same sha256 and size (the job its key's prefix names)."""
    try:
        build_id, target, attempt = keys.parse_job_key(entry.key)
    except ValueError:
        return False
    return any(
        earlier.tenant == tenant and earlier.view.target == target
        and earlier.view.state is BuildState.SUCCEEDED and earlier.manifest is not None
        and earlier.manifest.attempt == attempt
        and any(listed.key == entry.key and listed.sha256 == entry.sha256
                and listed.size == entry.size for listed in earlier.manifest.artifacts)
        for earlier in of_build(build_id))


def finish(farm: Farm, job_id: JobId, attempt: int, outcome: Outcome) -> JobView | None:
    """Move a job to a terminal state and tell the build's stream (and its end)."""
    record = farm.store.jobs.get(job_id)
    moved = farm.store.jobs.finish(job_id, attempt, outcome)
    if moved is None:
        return None
    farm.doorbell.ring()  # its slot is free
    build = farm.store.builds.get(record.build_id)
    # Counted before anyone is told: a follower that reads /metrics once its build ended
    # finds the end counted.
    farm.metrics.finished(moved, record.tenant, build)
    tell(farm, record.build_id, Event(kind="state", target=moved.target, state=outcome.state))
    if build.state.terminal:
        tell(farm, record.build_id, Event(kind="end", state=build.state))
    return moved


def rerun(farm: Farm, record: JobRecord, decision: Decision, why: str) -> None:
    """Run a running job again under the next attempt, on the queue `decision` names,
    as its worker no longer does (`why`): held, the placer sends it when a slot is free."""
    job = record.view
    moved = farm.store.jobs.retry(job.job_id, job.attempt, decision.queue,
                                  f"{decision.placed} (attempt {job.attempt + 1}: {why})")
    if moved is not None:
        with job_context(build_id=record.build_id, job_id=job.job_id, attempt=job.attempt,
                         worker=job.worker, tenant=record.tenant):
            log.warning("job %s: %s; re-run as attempt %d", job.job_id, why, moved.attempt)
        tell(farm, record.build_id, Event(
            kind="log", target=job.target,
            line=f"crossfarm: {why}; re-running as attempt {moved.attempt}"))


def resend(farm: Farm, record: JobRecord, decision: Decision) -> None:
    """Hold a sent job again, under the next attempt, on the queue `decision` names: the
    message already sent can no longer start it, and the placer sends the new one."""
    job = record.view
    moved = farm.store.jobs.requeue(job.job_id, job.attempt, decision.queue, decision.placed)
    if moved is not None:
        log.info("job %s moves to %s: %s", job.job_id, decision.queue, decision.placed)
