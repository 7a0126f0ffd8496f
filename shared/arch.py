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


def supported_targets() -> list[str]:
    return sorted(TARGETS)


def target_arch(target: str) -> Arch:
    """The native architecture of a target triple; UnsupportedTarget if the farm has none."""
    try:
        return TARGETS[target]
    except KeyError:
        raise UnsupportedTarget(target, supported_targets()) from None
