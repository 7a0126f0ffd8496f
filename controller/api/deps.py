"""Dependencies as Annotated aliases, so routes read as their signatures."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Request

from crossfarm.controller.farm import Farm
from crossfarm.shared.ids import (
    BuildId,
    JobId,
    SourceDigest,
    parse_build_id,
    parse_digest,
    parse_job_id,
)


def _farm(request: Request) -> Farm:
    farm: Farm = request.app.state.farm
    return farm


def _build_id(build_id: Annotated[str, Path()]) -> BuildId:
    try:
        return parse_build_id(build_id)
    except ValueError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


def _job_id(job_id: Annotated[str, Path()]) -> JobId:
    try:
        return parse_job_id(job_id)
    except ValueError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


def _digest(digest: Annotated[str, Path()]) -> SourceDigest:
    try:
        return parse_digest(digest)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


def _check_bearer(expected: str | None, authorization: str | None, refusal: str,
                  *also: str | None) -> None:
    """No token configured: open (the single-machine farm). Otherwise the request must
    carry it, or one of the tokens `also` accepted, as `Authorization: Bearer <token>`."""
    if expected is None:
        return
    given = (authorization or "").removeprefix("Bearer ").encode()
    accepted = [token.encode() for token in (expected, *also) if token is not None]
    # a list, not a generator: every token is compared, each in constant time
    if not any([hmac.compare_digest(given, token) for token in accepted]):
        raise HTTPException(status_code=401, detail=refusal)


def _worker(farm: Annotated[Farm, Depends(_farm)],
            authorization: Annotated[str | None, Header()] = None) -> None:
    _check_bearer(farm.settings.worker_token, authorization, "worker token missing or wrong")


def _operator(farm: Annotated[Farm, Depends(_farm)],
              authorization: Annotated[str | None, Header()] = None) -> None:
    _check_bearer(farm.settings.operator_token, authorization,
                  "operator token missing or wrong; set `token` in your crossfarm config")


def _client(farm: Annotated[Farm, Depends(_farm)],
            authorization: Annotated[str | None, Header()] = None) -> None:
    """Builds, sources and the fleet: the client token, or the operator's."""
    _check_bearer(farm.settings.client_token, authorization,
                  "client token missing or wrong; set `token` in your crossfarm config "
                  "(or CROSSFARM_TOKEN)", farm.settings.operator_token)


FarmDep = Annotated[Farm, Depends(_farm)]
BuildIdDep = Annotated[BuildId, Depends(_build_id)]
JobIdDep = Annotated[JobId, Depends(_job_id)]
DigestDep = Annotated[SourceDigest, Depends(_digest)]
WorkerAuth = Depends(_worker)
OperatorAuth = Depends(_operator)
ClientAuth = Depends(_client)
