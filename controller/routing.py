"""Target triple → native architecture → Celery queue. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from crossfarm.shared import keys
from crossfarm.shared.arch import Arch, target_arch


@dataclass(frozen=True)
class Route:
    """Where one target's job goes."""

    target: str
    arch: Arch
    queue: str


def route(target: str) -> Route:
    """The queue of the architecture that builds `target` natively; UnsupportedTarget if none."""
    arch = target_arch(target)
    return Route(target=target, arch=arch, queue=keys.queue_name(arch))
