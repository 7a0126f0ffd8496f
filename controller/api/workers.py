"""/v1/workers: heartbeats in (from workers), the fleet out (to people and the CLI)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from crossfarm.controller import fleet
from crossfarm.controller.api.deps import FarmDep, OperatorDep, PrincipalDep, WorkerAuth
from crossfarm.controller.errors import responses
from crossfarm.shared.wire import Fleet, HeartbeatReply, WorkerHeartbeat, WorkerView

router = APIRouter(prefix="/v1/workers", tags=["workers"])

WorkerName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}$")]


@router.post("/{name}/heartbeat", dependencies=[WorkerAuth],
             responses=responses(400, 401, 403, 413, 422))
def heartbeat(farm: FarmDep, name: WorkerName, info: WorkerHeartbeat,
              fresh_start: Annotated[bool, Query()] = False) -> HeartbeatReply:
    return fleet.heartbeat(farm, name, info, fresh_start)


@router.post("/{name}/drain", responses=responses(401, 403, 404, 422))
def drain(farm: FarmDep, _operator: OperatorDep, name: WorkerName) -> WorkerView:
    """The worker takes no new jobs, finishes its running ones, then shows as drained."""
    return fleet.set_drain(farm, name, True)


@router.delete("/{name}/drain", responses=responses(401, 403, 404, 422))
def undrain(farm: FarmDep, _operator: OperatorDep, name: WorkerName) -> WorkerView:
    return fleet.set_drain(farm, name, False)


@router.get("", responses=responses(401, 403))
def list_workers(farm: FarmDep, principal: PrincipalDep) -> Fleet:
    """Every worker; another tenant's jobs are counted, not named (an operator sees all)."""
    return fleet.fleet(farm, tenant=principal.scope)
