"""What the CLI checks with the farm before it sends anything: that both speak the same
API version, and that the farm builds the targets (and the toolchain) asked for, so a
mistyped triple fails at once, not after the whole source was uploaded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from crossfarm.shared.errors import UnsupportedTarget, UsageError
from crossfarm.shared.wire import API_VERSION, Health, crossfarm_version


@dataclass(frozen=True)
class Toolchain:
    """A toolchain the farm offers: its name, its rustc releases, the targets it builds."""

    name: str
    releases: tuple[str, ...]
    targets: frozenset[str]

    def answers_to(self, asked: str) -> bool:
        """Whether `+asked` means this toolchain: its name, one of its releases, or a
        version whose patch level is left out (1.63 for 1.63.0)."""
        return asked == self.name or any(
            asked == release or release.startswith(f"{asked}.") for release in self.releases)


@dataclass(frozen=True)
class Offer:
    """What the farm builds now. A farm that names no toolchains builds every target with
    its one builder image: `toolchains` is then empty."""

    targets: frozenset[str]
    toolchains: tuple[Toolchain, ...] = field(default=())

    @classmethod
    def of_document(cls, document: Mapping[str, object]) -> Offer:
        """From /v1/targets: {"toolchains": [{"name", "releases", "targets": [{"target"}]}]}
        (other fields are the farm's to add); ValueError, TypeError or KeyError if it is
        not that shape."""
        entries = document["toolchains"]
        if not isinstance(entries, list):
            raise TypeError("toolchains is not a list")
        toolchains = tuple(
            Toolchain(name=str(entry["name"]),
                      releases=tuple(str(r) for r in entry.get("releases", [])),
                      targets=frozenset(str(t["target"]) for t in entry["targets"]))
            for entry in entries)
        targets = frozenset(t for toolchain in toolchains for t in toolchain.targets)
        return cls(targets=targets, toolchains=toolchains)


def version_warning(health: Health, url: str) -> str | None:
    """A warning when the farm at `url` speaks another API major version than this CLI
    (or none: older than versions); None when they match."""
    mine = f"crossfarm {crossfarm_version()}, API {API_VERSION}"
    if health.api is None:
        return (f"the farm at {url} reports no API version (a controller older than this "
                f"CLI: {mine}); requests may be refused or misread: upgrade the farm or use "
                "the CLI of its version")
    if health.api != API_VERSION:
        return (f"the farm at {url} speaks API {health.api} (crossfarm "
                f"{health.version or 'unknown'}), this CLI API {API_VERSION} ({mine}); "
                "requests may be refused or misread: install the CLI of the farm's version")
    return None


def check_request(offer: Offer, targets: list[str], toolchain: str | None) -> None:
    """Refuse, before anything is sent, a toolchain or a target the farm does not offer:
    UsageError or UnsupportedTarget naming what it does offer."""
    offered = offer.targets
    if toolchain is not None:
        if not offer.toolchains:
            raise UsageError(f"+{toolchain}: this farm names no toolchains (it builds with "
                             "its one builder image); leave +toolchain out")
        chosen = next((t for t in offer.toolchains if t.answers_to(toolchain)), None)
        if chosen is None:
            names = ", ".join(_shown(t) for t in offer.toolchains)
            raise UsageError(f"+{toolchain}: the farm has no such toolchain; available: "
                             f"{names}")
        offered = chosen.targets
    for target in targets:
        if target not in offered:
            raise UnsupportedTarget(target, sorted(offered))


def _shown(toolchain: Toolchain) -> str:
    releases = [r for r in toolchain.releases if r != toolchain.name]
    return f"{toolchain.name} ({', '.join(releases)})" if releases else toolchain.name
