"""What each tenant holds, as its quotas count it: jobs not yet ended, artifact bytes of
its builds, and whose jobs a worker runs (for a fleet view that names only one's own)."""

from __future__ import annotations

from sqlalchemy import func, select

from crossfarm.controller.store.schema import Database, JobRow, chunks
from crossfarm.shared.ids import JobId
from crossfarm.shared.states import BuildState

_TERMINAL = [state.value for state in BuildState if state.terminal]


class UsageStore:
    """Per-tenant sums over the jobs; read-only."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def unended_jobs(self, tenant: str) -> int:
        """The tenant's jobs accepted and not ended (queued or running)."""
        with self._db.session() as session:
            count = session.scalar(select(func.count()).select_from(JobRow).where(
                JobRow.tenant == tenant, JobRow.state.not_in(_TERMINAL)))
        return int(count or 0)

    def artifact_bytes(self, tenant: str) -> int:
        """The bytes of the artifacts the tenant's succeeded jobs keep, from their
        manifests (read whole: a JSON column has no portable sum), each stored object
        once: a job served from the result cache, or one whose file the tenant already
        stored (worker/artifacts.py), names the earlier job's object, counted there."""
        sizes: dict[str, int] = {}
        with self._db.session() as session:
            manifests = session.scalars(select(JobRow.manifest).where(
                JobRow.tenant == tenant, JobRow.state == BuildState.SUCCEEDED.value,
                JobRow.manifest.is_not(None), JobRow.cached_from.is_(None)))
            for manifest in manifests:
                for entry in (manifest or {}).get("artifacts", []):
                    sizes[str(entry.get("key"))] = int(entry.get("size", 0))
        return sum(sizes.values())

    def tenants_of(self, job_ids: list[JobId]) -> dict[JobId, str]:
        """Job id -> its tenant, for the given jobs."""
        tenants: dict[JobId, str] = {}
        with self._db.session() as session:
            for chunk in chunks(job_ids):
                rows = session.execute(select(JobRow.id, JobRow.tenant).where(
                    JobRow.id.in_(chunk)))
                tenants.update({JobId(job_id): tenant for job_id, tenant in rows})
        return tenants
