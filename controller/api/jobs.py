"""/v1/jobs: what workers report. Guarded by the worker token when one is set."""

from __future__ import annotations

from fastapi import APIRouter

from crossfarm.controller import jobs
from crossfarm.controller.api.deps import FarmDep, JobIdDep, WorkerAuth
from crossfarm.controller.errors import responses
from crossfarm.shared.wire import JobFinished, JobStarted, JobView, StartVerdict

router = APIRouter(prefix="/v1/jobs", tags=["jobs (workers)"], dependencies=[WorkerAuth])


@router.post("/{job_id}/start", responses=responses(400, 401, 403, 404, 409, 413, 422))
def job_started(farm: FarmDep, job_id: JobIdDep, report: JobStarted) -> StartVerdict:
    return jobs.start(farm, job_id, report)


@router.post("/{job_id}/finish", responses=responses(400, 401, 403, 404, 409, 413, 422))
def job_finished(farm: FarmDep, job_id: JobIdDep, report: JobFinished) -> JobView:
    return jobs.report_finished(farm, job_id, report)
