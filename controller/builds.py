"""The use-cases of the controller: plain functions that decide. Routes only translate."""

from __future__ import annotations

import logging

from crossfarm.controller import fleet
from crossfarm.controller.cargo_args import check_cargo_args
from crossfarm.controller.farm import Farm
from crossfarm.controller.placement import decide
from crossfarm.controller.store import NewBuild, NewJob
from crossfarm.shared.arch import target_arch
from crossfarm.shared.errors import BrokerError, Conflict, InvalidRequest
from crossfarm.shared.ids import BuildId, JobId, new_build_id, new_job_id
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import (
    ArtifactView,
    BuildRequest,
    BuildView,
    Event,
    JobFinished,
    JobMessage,
    JobStarted,
    JobView,
    StartVerdict,
)

log = logging.getLogger(__name__)

#: Variables the builder sets itself; a request overriding them would break the build.
_RESERVED_ENV = frozenset({"CARGO_HOME", "CARGO_TARGET_DIR", "HOME", "PATH", "CARGO_NET_OFFLINE"})


def tell(farm: Farm, build_id: BuildId, event: Event) -> None:
    """Add to a build's live stream. The record is already updated, so a Redis outage
    only costs a live line: followers re-check the record and still see the end."""
    try:
        farm.events.append(build_id, event)
    except BrokerError as exc:
        log.warning("event for %s not streamed: %s", build_id, exc.message)


def submit_build(farm: Farm, request: BuildRequest) -> BuildView:
    """Check a request, record it, and enqueue one job per target on the queue its
    placement policy picks from the fleet's state."""
    arches = [target_arch(target) for target in request.targets]
    timeout_s = _check_request(farm, request)
    placement = request.placement or farm.settings.default_placement
    served = fleet.capacity(farm)
    decisions = [decide(arch, placement, served) for arch in arches]
    new = NewBuild(
        build_id=new_build_id(),
        source=request.source,
        cargo=request.cargo,
        timeout_s=timeout_s,
        env={"all": dict(request.env), **{t: dict(v) for t, v in request.target_env.items()}},
        submitter=request.submitter,
        jobs=[
            NewJob(job_id=new_job_id(), target=target, arch=arch, queue=d.queue,
                   placement=placement.value, placed=d.placed, waiting=d.waiting,
                   wait_limit_s=request.wait_limit_s)
            for target, arch, d in zip(request.targets, arches, decisions, strict=True)
        ],
    )
    build = farm.store.add_build(new)
    for job in build.jobs:
        enqueue(farm, build.build_id, job)
    return farm.store.build(build.build_id)


def _check_request(farm: Farm, request: BuildRequest) -> int:
    """Refuse what the farm will not build; returns the build's timeout."""
    if len(set(request.targets)) != len(request.targets):
        raise InvalidRequest("each target may be named once")
    for values in [request.env, *request.target_env.values()]:
        reserved = sorted(_RESERVED_ENV & set(values))
        if reserved:
            raise InvalidRequest(f"{reserved} are set by the farm's builders and cannot be passed")
    unknown = set(request.target_env) - set(request.targets)
    if unknown:
        raise InvalidRequest(f"target_env names targets not in the request: {sorted(unknown)}")
    check_cargo_args(request.cargo.cargo_args)
    timeout_s = request.timeout_s or farm.settings.default_timeout_s
    if timeout_s > farm.settings.max_timeout_s:
        raise InvalidRequest(
            f"timeout_s {timeout_s} is over the farm's limit of {farm.settings.max_timeout_s}"
        )
    farm.store.tree(request.source)  # NotFound names the call to make first
    return timeout_s


def enqueue(farm: Farm, build_id: BuildId, job: JobView) -> None:
    """Send a recorded job to its queue. If the broker is away, the job stays queued in
    the record: the placer re-sends a queued job whose message the broker does not hold
    (reconcile_after_s), so an accepted build survives a Redis outage."""
    settings = farm.store.build_settings(build_id, job.target)
    message = JobMessage(
        job_id=job.job_id, build_id=build_id, target=job.target, attempt=job.attempt,
        source=settings.source, cargo=settings.cargo, timeout_s=settings.timeout_s,
        env=settings.env, limits=farm.settings.tree_limits().to_wire(),
    )
    try:
        farm.events.set_attempt(job.job_id, job.attempt)
        farm.queue.enqueue(message, job.queue)
    except Exception as exc:  # the broker's errors are many; the record must say what happened
        log.warning("job %s stays queued: could not send it to %s: %s",
                    job.job_id, job.queue, exc)
        tell(farm, build_id, Event(
            kind="log", target=job.target,
            line=f"crossfarm: the broker is unreachable ({exc}); the job stays queued "
                 f"and is sent once it is back"))
        return
    tell(farm, build_id, Event(kind="state", target=job.target, state=BuildState.QUEUED))


def get_build(farm: Farm, build_id: BuildId) -> BuildView:
    return farm.store.build(build_id)


def list_builds(farm: Farm, submitter: str | None, state: BuildState | None,
                limit: int) -> list[BuildView]:
    return farm.store.list_builds(submitter, state, limit)


def cancel_build(farm: Farm, build_id: BuildId) -> BuildView:
    """Cancel every job that has not finished; running ones are stopped by their worker."""
    for record in farm.store.jobs_of(build_id):
        job = record.view
        if job.state.terminal:
            continue
        farm.events.raise_cancel(job.job_id)
        finish(farm, job.job_id, job.attempt, BuildState.CANCELLED,
                reason="cancelled by request")
    return farm.store.build(build_id)


def job_started(farm: Farm, job_id: JobId, report: JobStarted) -> StartVerdict:
    """A worker asks to start a job; only the current attempt of a queued job may."""
    record = farm.store.job(job_id)
    if record.view.attempt != report.attempt:
        return StartVerdict(proceed=False, reason=f"attempt {report.attempt} is stale")
    if record.view.state is not BuildState.QUEUED:
        return StartVerdict(proceed=False, reason=f"job is {record.view.state.value}")
    moved = farm.store.move_job(
        job_id, report.attempt, BuildState.RUNNING, worker=report.worker,
        mode=report.mode.value, consumed_from=report.consumed_from,
    )
    if moved is None:
        return StartVerdict(proceed=False, reason="another report changed the job first")
    tell(farm, record.build_id,
                       Event(kind="state", target=moved.target, state=BuildState.RUNNING))
    return StartVerdict(proceed=True)


def job_finished(farm: Farm, job_id: JobId, report: JobFinished) -> JobView:
    record = farm.store.job(job_id)
    if record.view.state is BuildState.CANCELLED:
        return record.view  # cancelled while it ran: the cancel stands
    if report.manifest is not None and report.manifest.job_id != job_id:
        raise InvalidRequest("the manifest names another job")
    moved = finish(
        farm, job_id, report.attempt, report.state, exit_code=report.exit_code,
        reason=report.reason,
        manifest=report.manifest.model_dump(mode="json") if report.manifest else None,
    )
    if moved is None:
        raise Conflict(f"job {job_id} attempt {report.attempt} is no longer current")
    return moved


def finish(farm: Farm, job_id: JobId, attempt: int, state: BuildState, **fields: object
           ) -> JobView | None:
    """Move a job to a terminal state and tell the build's stream (and its end)."""
    record = farm.store.job(job_id)
    moved = farm.store.move_job(job_id, attempt, state, **fields)
    if moved is None:
        return None
    tell(farm, record.build_id, Event(kind="state", target=moved.target, state=state))
    build = farm.store.build(record.build_id)
    if build.state.terminal:
        tell(farm, record.build_id, Event(kind="end", state=build.state))
    return moved


def list_artifacts(farm: Farm, build_id: BuildId) -> list[ArtifactView]:
    """Every stored artifact of a build, with a short-lived download URL."""
    views: list[ArtifactView] = []
    for record in farm.store.jobs_of(build_id):
        manifest = record.manifest
        if manifest is None or record.view.state is not BuildState.SUCCEEDED:
            continue
        for entry in manifest.artifacts:
            views.append(ArtifactView(
                target=manifest.target, name=entry.name, size=entry.size, sha256=entry.sha256,
                url=farm.storage.presign_get(entry.key, farm.settings.presign_ttl_s),
                executable=entry.executable,
                path=f"target/{manifest.target}/{manifest.profile_dir}/{entry.name}",
            ))
    return views
