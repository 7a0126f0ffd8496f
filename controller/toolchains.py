"""Which toolchains and targets the fleet offers, from the online workers' heartbeats.
Pure: the heartbeats come in, answers go out.

    resolve       what a crate or the CLI asked for ("1.63", "1.63.0", "stable") -> the
                  name workers announce, or UnknownToolchain listing the available ones
    serving       the workers that build a target with a toolchain (placement counts
                  only them)
    neutral_arch  where an architecture-neutral target (wasm32) goes: the architecture
                  whose serving workers have the most free slots
    farm_targets  what `crossfarm targets` and /v1/targets show

A worker older than toolchain announcements offers its builder image as the default
toolchain and is counted for every target, as before.
"""

from __future__ import annotations

from collections.abc import Iterable

from crossfarm.shared import keys
from crossfarm.shared.arch import TARGETS, Arch, BuildMode, is_neutral, supported_targets
from crossfarm.shared.errors import UnknownToolchain, UnsupportedTarget
from crossfarm.shared.wire import (
    DEFAULT_CHANNELS,
    FarmTargets,
    TargetPlace,
    ToolchainOffer,
    ToolchainTargets,
    WorkerHeartbeat,
    toolchain_answers,
)


def available(workers: Iterable[WorkerHeartbeat]) -> list[str]:
    """The toolchain names the workers announce, sorted."""
    return sorted({offer.name for info in workers for offer in info.toolchains})


def resolve(requested: str | None, workers: Iterable[WorkerHeartbeat]) -> str | None:
    """The announced name of the toolchain `requested` names (None: the default): an
    exact name, else a release it is ("1.63.0") or a prefix of ("1.63"), else `stable`
    for the default. UnknownToolchain when no online worker offers it."""
    if requested is None:
        return None
    workers = list(workers)
    offers = [offer for info in workers for offer in info.toolchains]
    for offer in offers:
        if offer.name == requested:
            return offer.name
    for offer in offers:
        if toolchain_answers(requested, offer.name, offer.release):
            return offer.name
    if requested in DEFAULT_CHANNELS:
        return None
    raise UnknownToolchain(requested, available(workers))


def _offer(info: WorkerHeartbeat, toolchain: str | None) -> ToolchainOffer | None:
    for offer in info.toolchains:
        if (offer.name == toolchain) if toolchain is not None else offer.default:
            return offer
    return None


def builds(info: WorkerHeartbeat, toolchain: str | None, target: str) -> bool:
    """Whether a worker builds `target` with `toolchain` (None: its default)."""
    if not info.toolchains:  # a worker older than announcements: its image, any target
        return toolchain is None
    offer = _offer(info, toolchain)
    return offer is not None and target in offer.targets


def serving(workers: dict[str, WorkerHeartbeat], toolchain: str | None, target: str
            ) -> dict[str, WorkerHeartbeat]:
    """The workers (by name) that build `target` with `toolchain`."""
    return {name: info for name, info in workers.items() if builds(info, toolchain, target)}


def check_target(target: str, toolchain: str | None, workers: dict[str, WorkerHeartbeat]
                 ) -> None:
    """UnsupportedTarget for a target the farm cannot route (neither in the table of
    triples nor architecture-neutral), or, with a named toolchain or a neutral target, one
    that no online worker has the standard library of."""
    if not is_neutral(target) and target not in TARGETS:
        raise UnsupportedTarget(target, _offered_targets(workers, toolchain)
                                or supported_targets())
    if (toolchain is not None or is_neutral(target)) and not serving(workers, toolchain,
                                                                     target):
        raise UnsupportedTarget(target, _offered_targets(workers, toolchain))


def _offered_targets(workers: dict[str, WorkerHeartbeat], toolchain: str | None
                     ) -> list[str]:
    found = {t for info in workers.values() if (offer := _offer(info, toolchain))
             for t in offer.targets if is_neutral(t) or t in TARGETS}
    return sorted(found)


def neutral_arch(target: str, toolchain: str | None, workers: dict[str, WorkerHeartbeat]
                 ) -> Arch:
    """The architecture an architecture-neutral target goes to: of the workers building
    it, the architecture with the most free slots (concurrency less running), then the
    most workers, then by name. UnsupportedTarget if none builds it."""
    free: dict[Arch, list[int]] = {}
    for info in serving(workers, toolchain, target).values():
        try:
            arch = Arch.parse(info.arch)
        except ValueError:
            continue
        slots = free.setdefault(arch, [0, 0])
        slots[0] += max(0, info.concurrency - len(info.running))
        slots[1] += 1
    if not free:
        raise UnsupportedTarget(target, _offered_targets(workers, toolchain))
    return min(free, key=lambda arch: (-free[arch][0], -free[arch][1], arch.value))


def farm_targets(workers: dict[str, WorkerHeartbeat]) -> FarmTargets:
    """Per toolchain the online workers offer: each target they build with it, and which
    architectures' workers build it natively, with a cross toolchain or under emulation."""
    names = available(workers.values())
    toolchains = []
    for name in names:
        offers = [(info, offer) for info in workers.values()
                  if (offer := _offer(info, name)) is not None]
        triples = sorted({t for _, offer in offers for t in offer.targets
                          if is_neutral(t) or t in TARGETS})
        toolchains.append(ToolchainTargets(
            name=name, releases=sorted({offer.release for _, offer in offers}),
            default=any(offer.default for _, offer in offers),
            targets=[_place(t, [info for info, offer in offers if t in offer.targets])
                     for t in triples]))
    return FarmTargets(toolchains=toolchains)


def _place(target: str, workers: list[WorkerHeartbeat]) -> TargetPlace:
    arch = None if is_neutral(target) else TARGETS[target]
    modes: dict[BuildMode, set[Arch]] = {mode: set() for mode in BuildMode}
    for info in workers:
        try:
            host = Arch.parse(info.arch)
        except ValueError:
            continue
        if arch is None or arch is host:
            modes[BuildMode.NATIVE].add(host)
            continue
        for queue, mode in info.queues.items():
            try:
                key = keys.QueueKey.parse(queue)
            except ValueError:
                continue
            if key.arch is arch and mode is not BuildMode.NATIVE:
                modes[mode].add(host)
    return TargetPlace(target=target, arch=arch,
                       native=sorted(modes[BuildMode.NATIVE]),
                       cross=sorted(modes[BuildMode.CROSS]),
                       emulated=sorted(modes[BuildMode.EMULATED]), workers=len(workers))
