"""The build use-cases: submit, cancel, list and view a build. Routes only translate;
a job's own lifecycle (send, start, finish, re-run) is in jobs.py, when it is sent
is the placer's call."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from crossfarm.controller import fleet, jobs, quotas, result_cache, toolchains
from crossfarm.controller.cargo_args import check_cargo_args
from crossfarm.controller.farm import Farm
from crossfarm.controller.placement import Capacity, Decision, decide
from crossfarm.controller.store.builds import (
    BuildPage,
    ListCursor,
    NewBuild,
    NewJob,
    OverQueuedQuota,
)
from crossfarm.controller.store.group_commit import Failed, prepare_then_batch
from crossfarm.controller.store.jobs import JobRecord, Outcome
from crossfarm.controller.store.schema import DEFAULT_TENANT
from crossfarm.shared import keys
from crossfarm.shared.arch import Arch, BuildMode, Placement, is_neutral, target_arch
from crossfarm.shared.errors import Conflict, InvalidRequest, NotFound
from crossfarm.shared.ids import BuildId, new_build_id, new_job_id
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import (
    ArtifactView,
    BuildRequest,
    BuildView,
    SourceStatus,
    WorkerHeartbeat,
    WorkerState,
)

#: Variables the builder sets itself; a request overriding them would break the build.
_RESERVED_ENV = frozenset({"CARGO_HOME", "CARGO_TARGET_DIR", "HOME", "PATH", "CARGO_NET_OFFLINE"})


@dataclass(frozen=True)
class Submit:
    """One request to record as `tenant`'s, submitted by `submitter` (the request's own
    `submitter` field is a client's claim, never recorded); its source must be the
    tenant's own unless `any_source` (an operator's build)."""

    request: BuildRequest
    tenant: str = DEFAULT_TENANT
    submitter: str | None = None
    any_source: bool = False


def submit_build(farm: Farm, request: BuildRequest, tenant: str = DEFAULT_TENANT, *,
                 submitter: str | None = None, any_source: bool = False) -> BuildView:
    """One submit (see submit_many); raises what refused it."""
    [outcome] = submit_many(farm, [Submit(request, tenant, submitter, any_source)])
    if isinstance(outcome, Failed):
        raise outcome.error
    return outcome


def submit_many(farm: Farm, submits: Sequence[Submit]) -> list[BuildView | Failed]:
    """Check each request and record it, one job per target on the queue its placement
    policy picks from the workers' heartbeats (read once for them all); the placer sends
    each job when a slot is free and its tenant's turn comes (rung now, so an idle worker
    starts it at once). Nothing here reads the queue: a submit costs the same at any
    depth. All are recorded in one transaction, which checks each tenant's queued quota
    in order; each is answered alone: its view, or Failed with what refused it.

    A target whose inputs an earlier successful build of the tenant had, built with the
    image its queue's workers run now, is served that build's artifacts instead
    (result_cache.py): born succeeded, never sent, not counted against the queued quota."""
    roster = fleet.roster(farm)
    outcomes = prepare_then_batch(
        submits, lambda submit: _plan(farm, submit, roster),
        lambda plans: farm.store.builds.add_many([new for new, _ in plans]))
    answers: list[BuildView | Failed] = []
    for submit, outcome in zip(submits, outcomes, strict=True):
        if isinstance(outcome, Failed):  # refused by a check, or by the recording
            if isinstance(outcome.error, OverQueuedQuota):
                outcome = Failed(quotas.over_queued(submit.tenant, outcome.error))
            answers.append(outcome)
            continue
        (new, looked), view = outcome
        farm.metrics.submitted(view, submit.tenant,
                               [job.served is not None for job in new.jobs] if looked else [])
        answers.append(view)
    if any(not isinstance(answer, Failed) for answer in answers):
        farm.doorbell.ring()
    return answers


def _plan(farm: Farm, submit: Submit, roster: fleet.Roster) -> tuple[NewBuild, bool]:
    """The build one request asks for, checked: where each target's job goes, or which
    earlier job's artifacts serve it; and whether the result cache was looked in."""
    request, tenant = submit.request, submit.tenant
    online = {name: w.info for name, w in roster.workers.items()
              if roster.states[name] is WorkerState.ONLINE}
    # the toolchain's announced name: the cache key and the worker's image lookup use it
    cargo = request.cargo.model_copy(update={
        "toolchain": toolchains.resolve(request.cargo.toolchain, online.values())})
    for target in request.targets:
        toolchains.check_target(target, cargo.toolchain, online)
    arches = [toolchains.neutral_arch(target, cargo.toolchain, online) if is_neutral(target)
              else target_arch(target) for target in request.targets]
    request = request.model_copy(update={"cargo": cargo})
    timeout_s, tree = _check_request(farm, request, None if submit.any_source else tenant)
    placement = request.placement or farm.settings.default_placement
    new_jobs = []
    for target, arch in zip(request.targets, arches, strict=True):
        d = _decide(target, arch, placement, cargo.toolchain, online, roster.served)
        inputs, served = _from_cache(farm, request, tenant, tree, target,
                                     roster.images.get(d.queue, frozenset()))
        new_jobs.append(NewJob(
            job_id=new_job_id(), target=target, arch=arch, queue=d.queue,
            placement=placement.value, wait_limit_s=request.wait_limit_s, inputs=inputs,
            served=served,
            placed=d.placed if served is None else
            f"cached: build {served.build_id} made it from the same inputs with this image",
            waiting=d.waiting if served is None else None))
    quotas.check_submit(farm, tenant)
    looked = tree.locked and request.cache and farm.settings.result_cache
    return NewBuild(
        build_id=new_build_id(),
        source=request.source,
        cargo=request.cargo,
        timeout_s=timeout_s,
        env={"all": dict(request.env), **{t: dict(v) for t, v in request.target_env.items()}},
        submitter=submit.submitter,
        tenant=tenant,
        project=request.project,
        jobs=new_jobs,
        queued_limit=quotas.queued_limit(farm, tenant),
    ), looked


def _decide(target: str, arch: Arch, placement: Placement, toolchain: str | None,
            online: dict[str, WorkerHeartbeat], served: Capacity) -> Decision:
    """Where one target's job goes: only the workers that build it with its toolchain
    count (every worker, for a worker fleet older than toolchain announcements); an
    architecture-neutral target is built natively where neutral_arch sent it."""
    if is_neutral(target):
        return Decision(mode=BuildMode.NATIVE, queue=keys.QueueKey(arch),
                        placed=f"native: {target} runs on no host CPU; the {arch.value} "
                               "workers building it have the most free slots")
    if any(info.toolchains for info in online.values()):
        building = toolchains.serving(online, toolchain, target)
        served = Capacity.from_queues(info.queues for info in building.values())
    return decide(arch, placement, served)


def _from_cache(farm: Farm, request: BuildRequest, tenant: str, tree: SourceStatus,
                target: str, images: Iterable[str]) -> tuple[str | None, JobRecord | None]:
    """The key of one target's inputs (None: a tree without a Cargo.lock has no such key)
    and the earlier job the result cache serves it (None: a miss, or `cache` is off)."""
    if not tree.locked:
        return None, None
    env = {**request.env, **request.target_env.get(target, {})}
    inputs = result_cache.inputs_key(farm, request.source, target, request.cargo, env)
    if not (request.cache and farm.settings.result_cache):
        return inputs, None
    return inputs, result_cache.lookup(farm, tenant, inputs, images)


def _check_request(farm: Farm, request: BuildRequest, source_scope: str | None
                   ) -> tuple[int, SourceStatus]:
    """Refuse what the farm will not build; returns the build's timeout and its tree."""
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
    # NotFound names the call to make first; another tenant's source is as absent
    return timeout_s, farm.store.sources.tree(request.source, source_scope)


def get_build(farm: Farm, build_id: BuildId, tenant: str | None = None) -> BuildView:
    """A build; with `tenant`, only that tenant's (NotFound for another's)."""
    return farm.store.builds.get(build_id, tenant)


def stored_log_url(farm: Farm, build_id: BuildId, target: str, tenant: str | None = None
                   ) -> str:
    """A short-lived download URL of the log one target's last attempt stored when it
    ended. The live stream in Redis is dropped `event_ttl_s` after the build ends; this
    copy stays in the bucket with the artifacts. With `tenant`, only that tenant's build."""
    build = farm.store.builds.get(build_id, tenant)
    job = next((job for job in build.jobs if job.target == target), None)
    if job is None:
        raise NotFound(f"build {build_id} has no target {target[:100]!r}; its targets: "
                       f"{', '.join(job.target for job in build.jobs)}")
    if job.cached_from:
        raise NotFound(f"{target} of build {build_id} was served from the result cache and "
                       f"ran nowhere: its log is build {job.cached_from}'s")
    if not job.state.terminal or job.attempt < 1:
        raise Conflict(f"{target} of build {build_id} is {job.state}: a log is stored when "
                       "its job ends; follow the build's events for the live one")
    key = keys.log_key(build_id, target, job.attempt)
    if not farm.storage.exists(key):
        raise NotFound(f"no log is stored for {target} of build {build_id} (attempt "
                       f"{job.attempt}): the job ended before its worker stored one")
    return farm.storage.presign_get(key, farm.settings.presign_ttl_s)


def kept_build(farm: Farm, build_id: BuildId, tenant: str | None = None) -> BuildView | None:
    """`get_build`'s answer when it is known without reading the database, else None."""
    return farm.store.builds.kept(build_id, tenant)


def list_builds(farm: Farm, limit: int, after: str | None = None, submitter: str | None = None,
                state: BuildState | None = None, tenant: str | None = None,
                arch: Arch | None = None) -> BuildPage:
    """A page of builds, newest first, after the opaque cursor `after` a previous page
    gave; `tenant` scopes it to one tenant's builds, `arch` to those with a target of
    that architecture."""
    cursor = ListCursor.parse(after) if after is not None else None
    return farm.store.builds.page(limit, cursor, submitter=submitter, state=state, tenant=tenant,
                                  arch=arch)


def cancel_build(farm: Farm, build_id: BuildId, tenant: str | None = None) -> BuildView:
    """Cancel every job that has not finished; running ones are stopped by their worker.
    With `tenant`, only that tenant's build (NotFound for another's)."""
    farm.store.builds.get(build_id, tenant)
    for record in farm.store.jobs.of_build(build_id):
        job = record.view
        if job.state.terminal:
            continue
        farm.events.raise_cancel(job.job_id)
        jobs.finish(farm, job.job_id, job.attempt,
                    Outcome(BuildState.CANCELLED, reason="cancelled by request"))
    return farm.store.builds.get(build_id)


def list_artifacts(farm: Farm, build_id: BuildId, tenant: str | None = None
                   ) -> list[ArtifactView]:
    """Every stored artifact of a build, with a short-lived download URL. With `tenant`,
    only that tenant's build (NotFound for another's)."""
    farm.store.builds.get(build_id, tenant)
    views: list[ArtifactView] = []
    for record in farm.store.jobs.of_build(build_id):
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
