"""Submit-side quotas: what a tenant may hold at once (settings.quota_for). Over one,
the request is refused with QuotaExceeded (429, Retry-After) naming the quota; how many
jobs run at once per architecture is the placer's to hold back, not refused here."""

from __future__ import annotations

from crossfarm.controller.farm import Farm
from crossfarm.shared.errors import QuotaExceeded

#: Jobs end within minutes; storage is freed only when someone deletes something.
_RETRY_QUEUED_S = 30
_RETRY_STORAGE_S = 3600


def check_submit(farm: Farm, tenant: str, jobs: int) -> None:
    """Refuse a build of `jobs` jobs that would take the tenant over its queued quota, or
    any build while its stored sources or artifacts are already over theirs."""
    quota = farm.settings.quota_for(tenant)
    usage = farm.store.usage
    if quota.queued is not None:
        used = usage.unended_jobs(tenant)
        if used + jobs > quota.queued:
            raise QuotaExceeded(
                "queued", quota.queued, used, _RETRY_QUEUED_S,
                f"tenant {tenant!r} has {used} job(s) queued or running and its queued quota "
                f"is {quota.queued}: this build's {jobs} would pass it; retry once some end")
    if quota.artifact_bytes is not None:
        used = usage.artifact_bytes(tenant)
        if used > quota.artifact_bytes:
            raise QuotaExceeded(
                "artifact_bytes", quota.artifact_bytes, used, _RETRY_STORAGE_S,
                f"tenant {tenant!r} keeps {used} bytes of artifacts, over its artifact_bytes "
                f"quota of {quota.artifact_bytes}; ask an operator to free or raise it")
    if quota.source_bytes is not None:
        used = farm.store.sources.source_bytes(tenant)
        if used > quota.source_bytes:
            raise _over_sources(tenant, quota.source_bytes, used)


def check_upload(farm: Farm, tenant: str, sizes: dict[str, int]) -> None:
    """Refuse blobs whose bytes, new to the tenant, would take it over its source_bytes
    quota (blobs it already holds cost nothing again)."""
    limit = farm.settings.quota_for(tenant).source_bytes
    if limit is None:
        return
    new = farm.store.sources.missing_blobs(list(sizes), tenant)
    used = farm.store.sources.source_bytes(tenant)
    if used + sum(sizes[digest] for digest in new) > limit:
        raise _over_sources(tenant, limit, used)


def _over_sources(tenant: str, limit: int, used: int) -> QuotaExceeded:
    return QuotaExceeded(
        "source_bytes", limit, used, _RETRY_STORAGE_S,
        f"tenant {tenant!r} stores {used} bytes of sources and its source_bytes quota is "
        f"{limit}: these files would pass it; ask an operator to free or raise it")
