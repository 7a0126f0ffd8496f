"""Which queues a worker serves, in which mode, and which builder image runs a job."""

from __future__ import annotations

from collections.abc import Iterable

from crossfarm.shared import keys
from crossfarm.shared.arch import Arch, BuildMode, is_neutral, target_arch
from crossfarm.shared.errors import BuildError

#: The build user of every builder image (see deploy/images/builder/Dockerfile).
BUILD_UID = 10001


def served_queues(host: Arch, cross_arches: Iterable[Arch], emulate_arches: Iterable[Arch]
                  ) -> dict[str, BuildMode]:
    """Queue -> mode: the host's native queue first, then the architectures this worker
    cross-compiles for, then those it builds under emulation. The controller decides
    which queue a job goes to; this only says what the worker can do."""
    queues = {keys.QueueKey(host).name: BuildMode.NATIVE}
    for arch in cross_arches:
        if arch is not host:
            queues.setdefault(keys.QueueKey(arch, BuildMode.CROSS).name, BuildMode.CROSS)
    for arch in emulate_arches:
        if arch is not host:
            queues.setdefault(keys.QueueKey(arch, BuildMode.EMULATED).name,
                              BuildMode.EMULATED)
    return queues


def job_mode(target: str, consumed_from: str, served: dict[str, BuildMode]) -> BuildMode:
    """How this worker builds `target` taken from `consumed_from`; BuildError when the
    queue is not one it serves or not one of the target's architecture."""
    try:
        queue = keys.QueueKey.parse(consumed_from)
    except ValueError as exc:
        raise BuildError(f"job came from an unknown queue: {exc}") from None
    if consumed_from not in served:
        raise BuildError(f"this worker does not serve {consumed_from} (CROSSFARM_CROSS_ARCHES "
                         "and CROSSFARM_EMULATE_ARCHES say what a worker serves)")
    if is_neutral(target):
        # its code runs on no host CPU: every host builds it the same, natively, whichever
        # of this worker's queues it came from (the placer may move it off a busy one)
        return BuildMode.NATIVE
    if queue.arch is not target_arch(target):
        raise BuildError(f"{target} does not belong on {consumed_from}")
    return queue.mode


def builder_image(mode: BuildMode, arch: Arch, default: str, emulation_images: dict[str, str]
                  ) -> str:
    """The image for a job: the worker's own builder, or for an emulated build one of
    the target's architecture."""
    if mode is not BuildMode.EMULATED:
        return default
    try:
        return emulation_images[arch.value]
    except KeyError:
        raise BuildError(f"no builder image for emulated {arch.value} builds "
                         "(set CROSSFARM_EMULATION_IMAGES)") from None
