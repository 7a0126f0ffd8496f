"""Submit-side quotas: what a tenant may hold at once (settings.quota_for). Over one,
the request is refused with QuotaExceeded (429, Retry-After) naming the quota; how many
jobs run at once per architecture is the placer's to hold back, not refused here. The
queued quota is exact: the store counts it in the transaction that records a build."""

from __future__ import annotations

from crossfarm.controller.farm import Farm
from crossfarm.controller.store.builds import OverQueuedQuota
from crossfarm.shared.errors import QuotaExceeded

#: Jobs end within minutes; storage is freed only when someone deletes something.
_RETRY_QUEUED_S = 30
_RETRY_STORAGE_S = 3600


def queued_limit(farm: Farm, tenant: str) -> int | None:
    """The tenant's queued quota: checked in the transaction that records a build
    (store.builds.OverQueuedQuota), so submits at once cannot both take the last room."""
    return farm.settings.quota_for(tenant).queued


def over_queued(tenant: str, refused: OverQueuedQuota) -> QuotaExceeded:
    """The 429 of a build the store refused for the tenant's queued quota."""
    return QuotaExceeded(
        "queued", refused.limit, refused.used, _RETRY_QUEUED_S,
        f"tenant {tenant!r} has {refused.used} job(s) queued or running and its queued quota "
        f"is {refused.limit}: this build's {refused.jobs} would pass it; retry once some end")


def check_submit(farm: Farm, tenant: str) -> None:
    """Refuse any build while the tenant's stored sources or artifacts are already over
    their quotas (its queued quota is the store's to check: queued_limit)."""
    quota = farm.settings.quota_for(tenant)
    usage = farm.store.usage
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
