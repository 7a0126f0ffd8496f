"""/v1/blobs and /v1/sources: files travel once, as content-addressed blobs; a source is
a tree of them."""

from __future__ import annotations

import tempfile
from typing import IO

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from crossfarm.controller import sources
from crossfarm.controller.api.deps import ClientAuth, DigestDep, FarmDep
from crossfarm.controller.errors import responses
from crossfarm.shared.errors import InvalidSource
from crossfarm.shared.wire import (
    BlobQuery,
    FarmStats,
    GitSource,
    MissingBlobs,
    SourceLimits,
    SourceStatus,
    SourceTree,
)

router = APIRouter(tags=["sources"], dependencies=[ClientAuth])


@router.post("/v1/blobs/missing", responses=responses(400, 401, 403, 413, 422))
def missing_blobs(farm: FarmDep, query: BlobQuery) -> MissingBlobs:
    return sources.missing_blobs(farm, query)


@router.put("/v1/blobs/{digest}", status_code=204,
            responses=responses(401, 403, 413, 422, 429, 503))
async def put_blob(farm: FarmDep, digest: DigestDep, request: Request) -> None:
    """One file's bytes (large files; small ones travel better in packs)."""
    with await _spooled(request, farm.settings.max_file_bytes, "a file") as body:
        await run_in_threadpool(sources.put_blob, farm, digest, body)


@router.post("/v1/blobs/packs", status_code=201,
             responses=responses(401, 403, 413, 422, 429, 503))
async def put_pack(farm: FarmDep, request: Request) -> dict[str, int]:
    """Many blobs in one gzip'd tar, each member named by its sha256."""
    with await _spooled(request, farm.settings.max_pack_bytes, "a pack") as body:
        return {"blobs": await run_in_threadpool(sources.put_pack, farm, body)}


async def _spooled(request: Request, limit: int, what: str) -> IO[bytes]:
    """The request body in a temporary file; reading stops at the limit, so a huge body
    is refused without being buffered."""
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 - caller closes
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            spool.close()
            raise InvalidSource(f"{what} is over the farm's limit of {limit} bytes")
        spool.write(chunk)
    spool.seek(0)
    return spool


@router.post("/v1/sources", status_code=201,
             responses=responses(400, 401, 403, 404, 413, 422, 429, 503))
def create_source(farm: FarmDep, tree: SourceTree) -> SourceStatus:
    return sources.create_source(farm, tree)


@router.post("/v1/sources/git", status_code=201,
             responses=responses(400, 401, 403, 413, 422, 429, 503))
def create_git_source(farm: FarmDep, git: GitSource) -> SourceStatus:
    return sources.create_git_source(farm, git)


@router.get("/v1/sources/limits", responses=responses(401, 403))
def source_limits(farm: FarmDep) -> SourceLimits:
    """What one tree may hold here, for the CLI to check before it uploads anything."""
    return farm.settings.tree_limits().to_wire()


@router.get("/v1/sources/{digest}", responses=responses(401, 403, 404, 422, 503))
def get_source(farm: FarmDep, digest: DigestDep) -> SourceStatus:
    return sources.source_status(farm, digest)


@router.get("/v1/stats", tags=["health"], responses=responses(401, 403))
def stats(farm: FarmDep) -> FarmStats:
    return farm.counters.snapshot()
