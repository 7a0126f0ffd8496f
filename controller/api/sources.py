"""/v1/blobs and /v1/sources: files travel once, as content-addressed blobs; a source is
a tree of them."""

from __future__ import annotations

import tempfile

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from crossfarm.controller import sources
from crossfarm.controller.api.deps import DigestDep, FarmDep
from crossfarm.shared.errors import InvalidSource
from crossfarm.shared.wire import (
    BlobQuery,
    FarmStats,
    GitSource,
    MissingBlobs,
    SourceStatus,
    SourceTree,
)

router = APIRouter(tags=["sources"])


@router.post("/v1/blobs/missing")
def missing_blobs(farm: FarmDep, query: BlobQuery) -> MissingBlobs:
    return sources.missing_blobs(farm, query)


@router.put("/v1/blobs/{digest}", status_code=204)
async def put_blob(farm: FarmDep, digest: DigestDep, request: Request) -> None:
    limit = farm.settings.max_file_bytes
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # stop reading at the limit instead of buffering a huge body
                raise InvalidSource(f"a file is over the farm's limit of {limit} bytes")
            spool.write(chunk)
        spool.seek(0)
        await run_in_threadpool(sources.put_blob, farm, digest, spool)


@router.post("/v1/sources", status_code=201)
def create_source(farm: FarmDep, tree: SourceTree) -> SourceStatus:
    return sources.create_source(farm, tree)


@router.post("/v1/sources/git", status_code=201)
def create_git_source(farm: FarmDep, git: GitSource) -> SourceStatus:
    return sources.create_git_source(farm, git)


@router.get("/v1/sources/{digest}")
def get_source(farm: FarmDep, digest: DigestDep) -> SourceStatus:
    return sources.source_status(farm, digest)


@router.get("/v1/stats", tags=["health"])
def stats(farm: FarmDep) -> FarmStats:
    return farm.counters.snapshot()
