"""Architectures and the one table of supported target triples."""

from __future__ import annotations

import platform
from enum import StrEnum

from crossfarm.shared.errors import UnsupportedTarget


class Arch(StrEnum):
    """A native CPU architecture a worker can run on."""

    #: x86_64 hosts
    AMD64 = "amd64"
    #: 64-bit ARM hosts
    ARM64 = "arm64"

    @classmethod
    def parse(cls, name: str) -> Arch:
        """Parse an architecture name or one of its aliases (x86_64, aarch64, …)."""
        try:
            return _ALIASES[name.strip().lower()]
        except KeyError:
            known = ", ".join(sorted(_ALIASES))
            raise ValueError(f"unknown architecture {name!r}; known names: {known}") from None

    @classmethod
    def host(cls) -> Arch:
        """The architecture of the machine this process runs on, as the kernel reports it."""
        return cls.parse(platform.machine())


class BuildMode(StrEnum):
    """How a worker builds a target."""

    #: on a host of the target's own architecture
    NATIVE = "native"
    #: with a cross toolchain on a host of another architecture
    CROSS = "cross"
    #: in a builder of the target's architecture run under emulation (QEMU): slow
    EMULATED = "emulated"


class Placement(StrEnum):
    """Which build modes a request accepts, best first."""

    #: wait for a worker of the target's own architecture
    NATIVE = "native"
    #: fall back to a cross toolchain on another architecture
    CROSS_OK = "cross-ok"
    #: fall back to emulation as a last resort
    EMULATE_OK = "emulate-ok"

    @property
    def modes(self) -> tuple[BuildMode, ...]:
        return _MODES[self]


_MODES = {
    Placement.NATIVE: (BuildMode.NATIVE,),
    Placement.CROSS_OK: (BuildMode.NATIVE, BuildMode.CROSS),
    Placement.EMULATE_OK: (BuildMode.NATIVE, BuildMode.CROSS, BuildMode.EMULATED),
}

_ALIASES: dict[str, Arch] = {
    "amd64": Arch.AMD64,
    "x86_64": Arch.AMD64,
    "x64": Arch.AMD64,
    "arm64": Arch.ARM64,
    "aarch64": Arch.ARM64,
    "arm64v8": Arch.ARM64,
}

#: Every target triple the farm builds, and the architecture that builds it natively.
TARGETS: dict[str, Arch] = {
    "x86_64-unknown-linux-gnu": Arch.AMD64,
    "aarch64-unknown-linux-gnu": Arch.ARM64,
}


#: Targets whose code runs on no host CPU (WebAssembly): no architecture is theirs, so a
#: worker of any architecture builds them natively, given a toolchain with their standard
#: library; the controller sends them where there is capacity.
NEUTRAL_TARGET_PREFIXES = ("wasm32-", "wasm64-")


def is_neutral(target: str) -> bool:
    """Whether a target triple is architecture-neutral (its code runs on no host CPU)."""
    return target.startswith(NEUTRAL_TARGET_PREFIXES)


def supported_targets() -> list[str]:
    return sorted(TARGETS)


def target_arch(target: str) -> Arch:
    """The native architecture of a target triple; UnsupportedTarget if the farm has none."""
    try:
        return TARGETS[target]
    except KeyError:
        raise UnsupportedTarget(target, supported_targets()) from None
