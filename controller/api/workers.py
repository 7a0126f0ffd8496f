"""/v1/workers: heartbeats in (from workers), the fleet out (to people and the CLI)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from crossfarm.controller import fleet
from crossfarm.controller.api.deps import FarmDep, WorkerAuth
from crossfarm.shared.wire import Fleet, WorkerHeartbeat

router = APIRouter(prefix="/v1/workers", tags=["workers"])

WorkerName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}$")]


@router.post("/{name}/heartbeat", status_code=204, dependencies=[WorkerAuth])
def heartbeat(farm: FarmDep, name: WorkerName, info: WorkerHeartbeat,
              fresh_start: Annotated[bool, Query()] = False) -> None:
    fleet.heartbeat(farm, name, info, fresh_start)


@router.get("")
def list_workers(farm: FarmDep) -> Fleet:
    return fleet.fleet(farm)
