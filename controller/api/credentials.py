"""/v1/git-credentials: a tenant's tokens for its private git repositories, one per host.
A fetch for the tenant presents its own, over https, to that host only; none is ever
shown again."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from crossfarm.controller.api.deps import FarmDep, PrincipalDep, SubmitterDep
from crossfarm.controller.errors import responses
from crossfarm.shared.wire import GIT_HOST, GitAuth, GitCredentialView

router = APIRouter(tags=["sources"])

HostDep = Annotated[str, Path(max_length=253, pattern=GIT_HOST,
                              description="the git host: a DNS name or IPv4 address, lower "
                                          "case, no port")]


@router.put("/v1/git-credentials/{host}", responses=responses(401, 403, 413, 422))
def put_git_credential(farm: FarmDep, principal: SubmitterDep, host: HostDep,
                       auth: GitAuth) -> GitCredentialView:
    """Register (or replace) the user and token your git fetches present to `host`."""
    return farm.store.credentials.put(principal.tenant, host, auth)


@router.get("/v1/git-credentials", responses=responses(401, 403))
def git_credentials(farm: FarmDep, principal: PrincipalDep) -> list[GitCredentialView]:
    """Your tenant's registered hosts and users; never a token."""
    return farm.store.credentials.of_tenant(principal.tenant)


@router.delete("/v1/git-credentials/{host}", status_code=204,
               responses=responses(401, 403, 404, 422))
def delete_git_credential(farm: FarmDep, principal: SubmitterDep, host: HostDep) -> None:
    farm.store.credentials.delete(principal.tenant, host)
