"""Dependencies as Annotated aliases, so routes read as their signatures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from crossfarm.controller import auth
from crossfarm.controller.auth import Principal
from crossfarm.controller.farm import Farm
from crossfarm.shared.ids import (
    BuildId,
    JobId,
    SourceDigest,
    parse_build_id,
    parse_digest,
    parse_job_id,
)
from crossfarm.shared.wire import Role


# The dependencies that only parse or compare are coroutines: FastAPI runs a plain `def`
# dependency in its thread pool, a hop each that cost more than the parsing. Those that
# may read the database cross to the pool only when they do (_authenticated) or stay plain
# (_worker), off the event loop.
async def _farm(request: Request) -> Farm:
    farm: Farm = request.app.state.farm
    return farm


async def _build_id(build_id: Annotated[str, Path()]) -> BuildId:
    try:
        return parse_build_id(build_id)
    except ValueError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


async def _job_id(job_id: Annotated[str, Path()]) -> JobId:
    try:
        return parse_job_id(job_id)
    except ValueError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


async def _digest(digest: Annotated[str, Path()]) -> SourceDigest:
    try:
        return parse_digest(digest)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


#: Every client route's security scheme in the OpenAPI; missing headers are ours to refuse.
_client_bearer = HTTPBearer(
    auto_error=False, scheme_name="token",
    description="a token an operator issued (crossfarm admin token create), "
                "or the farm's configured client or operator token")
_worker_bearer = HTTPBearer(auto_error=False, scheme_name="workerToken",
                            description="the farm's CROSSFARM_WORKER_TOKEN")
Credentials = HTTPAuthorizationCredentials | None


async def _authenticated(request: Request, credentials: Credentials) -> Principal:
    farm: Farm = request.app.state.farm
    bearer, at = credentials.credentials if credentials else None, datetime.now(UTC)
    if auth.needs_database(farm, bearer, at):
        return await run_in_threadpool(auth.authenticate, farm, bearer, at)
    return auth.authenticate(farm, bearer, at)


def _requires(role: Role) -> Callable[..., Awaitable[Principal]]:
    """The dependency of routes that need `role`. Each one authenticates the request
    itself, rather than through a chain of dependencies (farm, then principal, then
    role): FastAPI's solving of each level cost a request more than the check it holds."""
    async def dependency(request: Request,
                         credentials: Annotated[Credentials, Depends(_client_bearer)]
                         ) -> Principal:
        return auth.require(await _authenticated(request, credentials), role)

    return dependency


def _worker(farm: Annotated[Farm, Depends(_farm)],
            credentials: Annotated[Credentials, Depends(_worker_bearer)]) -> None:
    auth.check_worker(farm, credentials.credentials if credentials else None)


FarmDep = Annotated[Farm, Depends(_farm)]
BuildIdDep = Annotated[BuildId, Depends(_build_id)]
JobIdDep = Annotated[JobId, Depends(_job_id)]
DigestDep = Annotated[SourceDigest, Depends(_digest)]
#: any valid token: reads of its own tenant's records (an operator's: every tenant's)
PrincipalDep = Annotated[Principal, Depends(_requires(Role.READ))]
#: a token that may submit, cancel and upload
SubmitterDep = Annotated[Principal, Depends(_requires(Role.SUBMIT))]
#: an operator's token: tokens, drains
OperatorDep = Annotated[Principal, Depends(_requires(Role.OPERATOR))]
WorkerAuth = Depends(_worker)
