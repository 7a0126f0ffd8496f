"""/healthz, /readyz and /metrics: what probes and Prometheus ask. No tenant's data."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from crossfarm.controller import errors, health
from crossfarm.controller.api.deps import FarmDep
from crossfarm.controller.gauges import FarmGauges
from crossfarm.controller.metrics import CONTENT_TYPE
from crossfarm.shared.errors import Unauthenticated
from crossfarm.shared.health import NOT_READY, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process runs and serves; checks no dependency (a restart would not fix one)."""
    return {"status": "ok"}


@router.get("/readyz", responses={
    200: {"description": "every dependency answered",
          "content": {"application/json": {"example": {
              "status": "ready", "checks": {"database": "ok", "redis": "ok", "s3": "ok"}}}}},
    **errors.responses(503)})
async def readyz(request: Request, farm: FarmDep) -> Response:
    """The database, Redis and the object store each answered within the deadline; 503
    names each one that did not (`failing`, with what it said in `checks`)."""
    state = request.app.state
    runner: Readiness | None = getattr(state, "readiness", None)
    if runner is None:
        runner = state.readiness = health.readiness(farm)
    verdicts = await run_in_threadpool(runner.verdicts)
    if verdicts.ready:
        return JSONResponse(verdicts.body())
    return errors.problem_response(errors.problem(
        503, NOT_READY, verdicts.detail(), title="Not ready",
        fields={"failing": verdicts.failing, "checks": verdicts.checks}))


@router.get("/metrics", response_class=Response, responses={
    200: {"description": "Prometheus text exposition format",
          "content": {CONTENT_TYPE: {"schema": {"type": "string"}}}},
    **errors.responses(401)})
def metrics(farm: FarmDep,
            authorization: Annotated[str | None, Header(include_in_schema=False)] = None
            ) -> Response:
    """The farm's metrics (docs/operations.md lists them). With CROSSFARM_METRICS_TOKEN
    set, Prometheus must send it as a bearer token (its `authorization` setting)."""
    wanted = farm.settings.metrics_token
    if wanted is not None:
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), wanted.encode()):
            raise Unauthenticated("GET /metrics needs CROSSFARM_METRICS_TOKEN as a bearer "
                                  "token: set it in Prometheus's scrape config")
    return Response(farm.metrics.exposition(FarmGauges(farm)), media_type=CONTENT_TYPE)
