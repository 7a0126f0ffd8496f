"""/v1/sources: content-addressed source archives, uploaded only when the farm lacks them."""

from __future__ import annotations

import tempfile

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from crossfarm.controller import builds
from crossfarm.controller.api.deps import DigestDep, FarmDep
from crossfarm.shared.errors import InvalidArchive
from crossfarm.shared.wire import SourceStatus

router = APIRouter(prefix="/v1/sources", tags=["sources"])


@router.get("/{digest}")
def get_source(farm: FarmDep, digest: DigestDep, response: Response) -> SourceStatus:
    status = builds.source_status(farm, digest)
    if not status.present:
        response.status_code = 404
    return status


@router.put("/{digest}", status_code=201)
async def put_source(farm: FarmDep, digest: DigestDep, request: Request) -> SourceStatus:
    limit = farm.settings.max_source_bytes
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # stop reading at the limit instead of buffering a huge body
                raise InvalidArchive(f"source archive is over the farm's limit of {limit} bytes")
            spool.write(chunk)
        spool.seek(0)
        return await run_in_threadpool(builds.put_source, farm, digest, spool)
