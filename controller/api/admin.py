"""/v1/admin: what only operators do. Tokens: issue one (its secret shown once), list
them (never a secret), revoke one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from crossfarm.controller import auth
from crossfarm.controller.api.deps import FarmDep, OperatorDep
from crossfarm.controller.errors import responses
from crossfarm.shared.wire import IssuedToken, TokenRequest, TokenView

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post("/tokens", status_code=201, responses=responses(400, 401, 403, 409, 413, 422))
def create_token(farm: FarmDep, _operator: OperatorDep, request: TokenRequest) -> IssuedToken:
    """The token is in this reply only: the farm keeps its sha256."""
    return auth.issue(farm, request)


@router.get("/tokens", responses=responses(401, 403))
def list_tokens(farm: FarmDep, _operator: OperatorDep) -> list[TokenView]:
    return auth.tokens(farm)


@router.delete("/tokens/{token_id}", responses=responses(401, 403, 404, 422))
def revoke_token(farm: FarmDep, _operator: OperatorDep,
                 token_id: Annotated[int, Path(ge=1, le=2**62)]) -> TokenView:
    """Requests with it are refused from now on; it stays listed, as revoked."""
    return auth.revoke(farm, token_id)
