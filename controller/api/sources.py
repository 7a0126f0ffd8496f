"""/v1/blobs and /v1/sources: files travel once, as content-addressed blobs; a source is
a tree of them."""

from __future__ import annotations

import tempfile
from typing import IO

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from crossfarm.controller import sources
from crossfarm.controller.api.deps import DigestDep, FarmDep, PrincipalDep, SubmitterDep
from crossfarm.controller.errors import responses
from crossfarm.shared.errors import TooLarge
from crossfarm.shared.wire import (
    BlobQuery,
    FarmStats,
    GitSource,
    MissingBlobs,
    SourceLimits,
    SourceStatus,
    SourceTree,
)

router = APIRouter(tags=["sources"])


@router.post("/v1/blobs/missing", responses=responses(400, 401, 403, 413, 422))
def missing_blobs(farm: FarmDep, principal: SubmitterDep, query: BlobQuery) -> MissingBlobs:
    """The blobs this token's tenant has not sent itself, whoever else has."""
    return sources.missing_blobs(farm, query, principal.tenant)


@router.put("/v1/blobs/{digest}", status_code=204,
            responses=responses(401, 403, 413, 422, 429, 503))
async def put_blob(farm: FarmDep, principal: SubmitterDep, digest: DigestDep,
                   request: Request) -> None:
    """One file's bytes (large files; small ones travel better in packs)."""
    limit = farm.settings.max_file_bytes
    with await _spooled(request, limit, "a file", "max_file_bytes") as body:
        await run_in_threadpool(sources.put_blob, farm, digest, body, principal.tenant)


@router.post("/v1/blobs/packs", status_code=201,
             responses=responses(401, 403, 413, 422, 429, 503))
async def put_pack(farm: FarmDep, principal: SubmitterDep, request: Request
                   ) -> dict[str, int]:
    """Many blobs in one gzip'd tar, each member named by its sha256."""
    limit = farm.settings.max_pack_bytes
    with await _spooled(request, limit, "a pack", "max_pack_bytes") as body:
        return {"blobs": await run_in_threadpool(sources.put_pack, farm, body,
                                                 principal.tenant)}


async def _spooled(request: Request, limit: int, what: str, setting: str) -> IO[bytes]:
    """The request body in a temporary file; reading stops at the limit, so a huge body
    is refused without being buffered (controller/limits.py refuses it first; this keeps
    the route safe on its own)."""
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 - caller closes
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            spool.close()
            raise TooLarge(what, limit, setting)
        spool.write(chunk)
    spool.seek(0)
    return spool


@router.post("/v1/sources", status_code=201,
             responses=responses(400, 401, 403, 404, 413, 422, 429, 503))
def create_source(farm: FarmDep, principal: SubmitterDep, tree: SourceTree) -> SourceStatus:
    return sources.create_source(farm, tree, tenant=principal.tenant)


@router.post("/v1/sources/git", status_code=201,
             responses=responses(400, 401, 403, 413, 422, 429, 503))
def create_git_source(farm: FarmDep, principal: SubmitterDep, git: GitSource) -> SourceStatus:
    return sources.create_git_source(farm, git, principal.tenant)


@router.get("/v1/sources/limits", responses=responses(401, 403))
def source_limits(farm: FarmDep, _principal: PrincipalDep) -> SourceLimits:
    """What one tree may hold here, for the CLI to check before it uploads anything."""
    return farm.settings.tree_limits().to_wire()


@router.get("/v1/sources/{digest}", responses=responses(401, 403, 404, 422, 503))
def get_source(farm: FarmDep, principal: PrincipalDep, digest: DigestDep) -> SourceStatus:
    return sources.source_status(farm, digest, principal.scope)


@router.get("/v1/stats", tags=["health"], responses=responses(401, 403))
def stats(farm: FarmDep, _principal: PrincipalDep) -> FarmStats:
    return farm.counters.snapshot()
