"""What each dashboard page shows, decided by plain functions over the same use-cases
the API calls (builds.py, fleet.py), with the same tenant scope: a tenant's token sees
its own builds only, and the fleet with other tenants' jobs counted, never named.
The routes render these models; nothing here knows HTML."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from crossfarm.controller import builds, fleet
from crossfarm.controller.auth import Principal
from crossfarm.controller.dashboard import chart
from crossfarm.controller.farm import Farm
from crossfarm.controller.store.builds import ListCursor
from crossfarm.shared.arch import Arch
from crossfarm.shared.errors import InvalidRequest, NotFound
from crossfarm.shared.ids import BuildId, parse_build_id
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import (
    ArchSummary,
    ArtifactView,
    BuildView,
    JobView,
    Role,
    WorkerState,
    WorkerView,
)

#: builds per page of the listing
PAGE_SIZE = 25
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAX_SUBMITTER = 200
_MAX_CURSOR = 200


@dataclass(frozen=True)
class BuildFilters:
    """The listing's filters as the query string gives them, checked."""

    state: BuildState | None = None
    arch: Arch | None = None
    tenant: str | None = None
    submitter: str | None = None
    #: the opaque cursor of the page to show (None: the first)
    after: str | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> BuildFilters:
        """InvalidRequest naming the field and the values it takes."""

        def given(name: str) -> str | None:
            value = query.get(name, "").strip()
            return value or None

        state, arch = given("state"), given("arch")
        tenant, submitter, after = given("tenant"), given("submitter"), given("after")
        try:
            parsed_state = BuildState(state) if state else None
        except ValueError:
            raise InvalidRequest(f"state: choose one of "
                                 f"{', '.join(s.value for s in BuildState)}") from None
        try:
            parsed_arch = Arch.parse(arch) if arch else None
        except ValueError as exc:
            raise InvalidRequest(f"arch: {exc}") from None
        if tenant is not None and not _TENANT.fullmatch(tenant):
            raise InvalidRequest("tenant: a tenant's name is 1-64 letters, digits, '.', '_' "
                                 "or '-', starting with a letter or digit")
        if submitter is not None and len(submitter) > _MAX_SUBMITTER:
            raise InvalidRequest(f"submitter: at most {_MAX_SUBMITTER} characters "
                                 "(a submitter reads as <token name>@<tenant>)")
        if after is not None:
            if len(after) > _MAX_CURSOR:
                raise InvalidRequest("after: not a page this dashboard linked to; start again "
                                     "from the first page")
            ListCursor.parse(after)  # InvalidRequest for a cursor no page gave
        return cls(parsed_state, parsed_arch, tenant, submitter, after)

    def query(self, **changes: str | None) -> str:
        """The query string of these filters with `changes`, for links and the form."""
        values = {"state": self.state.value if self.state else None,
                  "arch": self.arch.value if self.arch else None,
                  "tenant": self.tenant, "submitter": self.submitter, "after": self.after}
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v})


@dataclass(frozen=True)
class BuildLine:
    """One build of the listing."""

    view: BuildView
    #: from its creation to its last job's end (or to now, while it runs)
    duration: str


@dataclass(frozen=True)
class BuildList:
    lines: list[BuildLine]
    filters: BuildFilters
    #: the query string of the next page (None: this is the last)
    next_query: str | None
    #: an operator may list any tenant; a tenant's token lists its own only
    any_tenant: bool
    #: the token's own tenant (shown; the filter is fixed to it)
    tenant: str


def _build_duration(view: BuildView, now: datetime) -> str:
    ends = [job.finished_at for job in view.jobs]
    end = max((e for e in ends if e is not None), default=None) \
        if view.state.terminal else now
    return chart.duration_text(((end or now) - view.created_at).total_seconds())


def build_list(farm: Farm, principal: Principal, filters: BuildFilters,
               now: datetime | None = None, page_size: int = PAGE_SIZE) -> BuildList:
    """A page of the builds the principal may read, newest first. A tenant's token asking
    for another tenant's builds gets none, as the API would show it none."""
    now = now or datetime.now(UTC)
    scope = principal.scope
    if scope is not None and filters.tenant not in (None, scope):
        return BuildList([], filters, None, any_tenant=False, tenant=principal.tenant)
    page = builds.list_builds(farm, page_size, filters.after, submitter=filters.submitter,
                              state=filters.state, tenant=scope or filters.tenant,
                              arch=filters.arch)
    lines = [BuildLine(view, _build_duration(view, now)) for view in page.builds]
    next_query = filters.query(after=page.next.encode()) if page.next is not None else None
    return BuildList(lines, filters, next_query, any_tenant=scope is None,
                     tenant=principal.tenant)


def page_build_id(text: str) -> BuildId:
    """A build id from a dashboard path; NotFound (as the API answers) for anything else."""
    try:
        return parse_build_id(text)
    except ValueError as exc:
        raise NotFound(str(exc)) from None


@dataclass(frozen=True)
class TargetPanel:
    """One target of a build: where and how it ran, and what it made."""

    job: JobView
    #: "worker-1, cross build, from queue arm64.cross" (None: no worker took it yet)
    where: str | None
    #: how long it waited to start, and how long it ran (None: not yet)
    waited: str | None
    ran: str | None
    artifacts: list[ArtifactView] = field(default_factory=list)


@dataclass(frozen=True)
class BuildPage:
    build: BuildView
    targets: list[TargetPanel]
    #: the principal may cancel it (a submit token of its tenant, or an operator) and
    #: something of it has not ended yet
    may_cancel: bool


def _where(job: JobView) -> str | None:
    if job.cached_from is not None:
        return f"served from the result cache (build {job.cached_from})"
    if job.worker is None:
        return None
    parts = [job.worker]
    if job.mode is not None:
        parts.append(f"{job.mode.value} build")
    if job.consumed_from:
        parts.append(f"from queue {job.consumed_from}")
    if job.attempt > 1:
        parts.append(f"attempt {job.attempt}")
    return ", ".join(parts)


def _panel(job: JobView, artifacts: list[ArtifactView], now: datetime) -> TargetPanel:
    waited = ran = None
    if job.started_at is not None:
        waited = chart.duration_text((job.started_at - job.queued_at).total_seconds())
        ran = chart.duration_text(((job.finished_at or now) - job.started_at).total_seconds())
    elif not job.state.terminal:
        waited = chart.duration_text((now - job.queued_at).total_seconds()) + " so far"
    return TargetPanel(job, _where(job), waited, ran,
                       [a for a in artifacts if a.target == job.target])


def build_page(farm: Farm, principal: Principal, build_id: BuildId,
               now: datetime | None = None) -> BuildPage:
    """NotFound for a build of another tenant, as the API answers."""
    now = now or datetime.now(UTC)
    view = builds.get_build(farm, build_id, principal.scope)
    artifacts = builds.list_artifacts(farm, build_id, principal.scope) \
        if any(job.state is BuildState.SUCCEEDED for job in view.jobs) else []
    return BuildPage(view, [_panel(job, artifacts, now) for job in view.jobs],
                     may_cancel=principal.may(Role.SUBMIT) and not view.state.terminal)


def artifact_url(farm: Farm, principal: Principal, build_id: BuildId, target: str,
                 name: str) -> str:
    """A fresh download URL of one artifact (presigned now, so a page left open for
    longer than a presigned URL lives still downloads); NotFound for any other."""
    for artifact in builds.list_artifacts(farm, build_id, principal.scope):
        if artifact.target == target and artifact.name == name:
            return artifact.url
    raise NotFound(f"build {build_id} has no artifact {name[:100]!r} for {target[:100]!r}: "
                   "the build page lists the ones it has")


@dataclass(frozen=True)
class WorkerLine:
    view: WorkerView
    #: jobs running on it (its tenant's named, other tenants' only counted) / its slots
    running: int
    slots: int
    #: "drain requested", "draining (SIGTERM)", …; None: takes jobs
    drain: str | None


@dataclass(frozen=True)
class ArchGroup:
    #: as the workers report it (a worker of an architecture this farm has no name for
    #: is still listed)
    arch: str
    workers: list[WorkerLine]


@dataclass(frozen=True)
class QueueLine:
    summary: ArchSummary
    #: how long the oldest queued job has waited (None: nothing waits)
    oldest_wait: str | None


@dataclass(frozen=True)
class FleetPage:
    groups: list[ArchGroup]
    queues: list[QueueLine]
    charts: list[chart.ArchChart]


def _drain_text(view: WorkerView) -> str | None:
    if view.state is WorkerState.DRAINED:
        return "drained"
    if view.drain_requested:
        return "drain requested"
    if view.info.draining:
        return "draining on its own (shutting down)"
    return None


def fleet_page(farm: Farm, principal: Principal, now: datetime | None = None) -> FleetPage:
    now = now or datetime.now(UTC)
    seen = fleet.fleet(farm, now, tenant=principal.scope)
    groups: dict[str, list[WorkerLine]] = {}
    for view in sorted(seen.workers, key=lambda w: w.name):
        groups.setdefault(view.info.arch, []).append(WorkerLine(
            view, running=len(view.running_jobs) + view.other_tenants_jobs,
            slots=view.info.concurrency, drain=_drain_text(view)))
    queues = [QueueLine(summary, chart.duration_text((now - summary.oldest_waiting)
                                                     .total_seconds())
                        if summary.oldest_waiting is not None else None)
              for summary in seen.arches]
    timings = farm.store.jobs.timings(now - timedelta(hours=chart.HOURS),
                                      tenant=principal.scope)
    return FleetPage([ArchGroup(arch, lines) for arch, lines in sorted(groups.items())],
                     queues, chart.charts(timings, now))

