"""/v1/targets: what the farm can build now, per toolchain, and where each target goes."""

from __future__ import annotations

from fastapi import APIRouter

from crossfarm.controller import fleet, toolchains
from crossfarm.controller.api.deps import FarmDep, PrincipalDep
from crossfarm.controller.errors import responses
from crossfarm.shared.wire import FarmTargets

router = APIRouter(prefix="/v1/targets", tags=["targets"])


@router.get("", responses=responses(401, 403))
def list_targets(farm: FarmDep, _principal: PrincipalDep) -> FarmTargets:
    """Each toolchain the online workers announce, with the targets they build with it
    (from the standard libraries in their images); a client checks its targets and
    toolchain here before it uploads anything."""
    return toolchains.farm_targets(fleet.online_workers(farm))
