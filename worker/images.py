"""Which builder image runs a job, and how the target's toolchain is invoked in it."""

from __future__ import annotations

from crossfarm.shared.arch import Arch, target_arch
from crossfarm.shared.errors import BuildError
from crossfarm.shared.wire import BuildMode

#: The build user of every builder image (see deploy/images/builder/Dockerfile).
BUILD_UID = 10001


def build_mode(target: str, host: Arch, cross_arches: list[Arch]) -> BuildMode:
    """Native if the target's architecture is the host's; cross if this worker is set up to
    serve that architecture with its cross toolchain; otherwise the job is not for it."""
    arch = target_arch(target)
    if arch is host:
        return BuildMode.NATIVE
    if arch in cross_arches:
        return BuildMode.CROSS
    raise BuildError(
        f"this {host.value} worker does not serve {arch.value} targets; "
        f"set CROSSFARM_CROSS_ARCHES={arch.value} to build them with the cross toolchain"
    )
