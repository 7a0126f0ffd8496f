"""Placement policy: which queue a target's job goes to, given what the fleet offers.
Pure: the fleet's state comes in as a Capacity, a Decision goes out.

    native      wait for a worker of the target's architecture
    cross-ok    else another architecture's worker with a cross toolchain
    emulate-ok  else a builder of the target's architecture under emulation

A job no allowed worker can take waits on its native queue, and its status says why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from crossfarm.shared import keys
from crossfarm.shared.arch import Arch, BuildMode, Placement


@dataclass(frozen=True)
class Capacity:
    """How many online workers serve each (architecture, mode)."""

    online: dict[keys.QueueKey, int]

    @classmethod
    def from_queues(cls, queue_lists: Iterable[Iterable[str]]) -> Capacity:
        """From each online worker's list of queues."""
        online: dict[keys.QueueKey, int] = {}
        for queues in queue_lists:
            for queue in queues:
                try:
                    key = keys.QueueKey.parse(queue)
                except ValueError:
                    continue  # a queue this controller does not know: not capacity for it
                online[key] = online.get(key, 0) + 1
        return cls(online=online)

    def serves(self, arch: Arch, mode: BuildMode) -> bool:
        return self.online.get(keys.QueueKey(arch, mode), 0) > 0


@dataclass(frozen=True)
class Decision:
    """Where a job goes and the sentence that explains it."""

    mode: BuildMode
    queue: keys.QueueKey
    placed: str
    #: set when no allowed worker is online: what the job waits for
    waiting: str | None = None


_WHY = {
    BuildMode.NATIVE: "native: an {arch} worker is online",
    BuildMode.CROSS: "cross: no {arch} worker online; {placement} allows a cross toolchain",
    BuildMode.EMULATED: "emulated: no {arch} worker or cross toolchain online; "
                        "{placement} allows emulation",
}


def decide(arch: Arch, placement: Placement, capacity: Capacity) -> Decision:
    """The best allowed mode some online worker serves; else wait on the native queue."""
    for mode in placement.modes:
        if capacity.serves(arch, mode):
            return Decision(mode=mode, queue=keys.QueueKey(arch, mode),
                            placed=_WHY[mode].format(arch=arch.value, placement=placement.value))
    return Decision(mode=BuildMode.NATIVE, queue=keys.QueueKey(arch),
                    placed=f"native: waiting, as {placement.value} allows nothing else online",
                    waiting=waiting_for(arch, placement))


def waiting_for(arch: Arch, placement: Placement) -> str:
    text = f"waiting: no {arch.value} worker online"
    if BuildMode.CROSS in placement.modes:
        text += f", none with a cross toolchain for {arch.value}"
    if BuildMode.EMULATED in placement.modes:
        text += f", none that emulates {arch.value}"
    if placement is Placement.NATIVE:
        text += " (placement native: use --placement cross-ok to allow a cross toolchain)"
    return text


def replan(queue: keys.QueueKey, arch: Arch, placement: Placement, capacity: Capacity,
           waited_s: float, pickup_bound_s: float) -> Decision | None:
    """A better queue for a job waiting on `queue`, or None to leave it there.

    It moves when nobody serves its queue any more and an allowed one is served, or
    when it has waited past the pickup bound on its native queue (native workers all
    busy) and a fallback is served.
    """
    mode = queue.mode
    best = decide(arch, placement, capacity)
    if not capacity.serves(arch, mode):
        return best if best.queue != queue and best.waiting is None else None
    if mode is BuildMode.NATIVE and waited_s > pickup_bound_s:
        for fallback in placement.modes[1:]:
            if capacity.serves(arch, fallback):
                return Decision(
                    mode=fallback, queue=keys.QueueKey(arch, fallback),
                    placed=f"{fallback.value}: no {arch.value} worker took it within "
                           f"{pickup_bound_s:g} s; {placement.value} allows {fallback.value}")
    return None
