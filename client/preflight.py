"""What the CLI checks with the farm before it sends anything: that both speak the same
API version, and that the farm builds the targets with the toolchain asked for, so a
mistyped triple or an unknown toolchain fails at once, not after the whole source was
uploaded. The farm's answer comes from /v1/targets (what its online workers offer, per
toolchain), or from a controller older than that endpoint, the targets its /v1/health
names. The refusals are the errors the controller itself would answer with."""

from __future__ import annotations

from crossfarm.shared.arch import TARGETS, is_neutral
from crossfarm.shared.errors import UnknownToolchain, UnsupportedTarget, UsageError
from crossfarm.shared.wire import (
    API_VERSION,
    DEFAULT_CHANNELS,
    FarmTargets,
    Health,
    ToolchainTargets,
    crossfarm_version,
    toolchain_answers,
)


def version_warning(health: Health, url: str) -> str | None:
    """A warning when the farm at `url` speaks another API major version than this CLI
    (or none: older than versions); None when they match."""
    if health.api == API_VERSION:
        return None
    mine = f"crossfarm {crossfarm_version()}, API {API_VERSION}"
    if health.api is None:
        return (f"the farm at {url} reports no API version (a controller older than this "
                f"CLI: {mine}); requests may be refused or misread: upgrade the farm or use "
                "the CLI of its version")
    return (f"the farm at {url} speaks API {health.api} (crossfarm "
            f"{health.version or 'unknown'}), this CLI API {API_VERSION} ({mine}); "
            "requests may be refused or misread: install the CLI of the farm's version")


def check_request(offer: FarmTargets | None, health: Health, toolchain: str | None,
                  targets: list[str]) -> None:
    """Refuse, before anything is sent, a toolchain or a target the farm does not offer.
    `offer` is None for a controller older than /v1/targets: its health's targets count."""
    if offer is None:
        _check_older_farm(health, toolchain, targets)
    else:
        check_offer(offer, toolchain, targets)


def check_offer(offer: FarmTargets, toolchain: str | None, targets: list[str]) -> None:
    """UnknownToolchain when the farm's online workers offer no such toolchain;
    UnsupportedTarget for a target they do not build with it. A target of the farm's
    table may wait for a worker of its architecture when no toolchain was named; a named
    toolchain, an architecture-neutral target (wasm32) or an unknown triple must be
    offered now."""
    chosen: ToolchainTargets | None
    if toolchain is not None and toolchain not in DEFAULT_CHANNELS:
        chosen = next((t for t in offer.toolchains if t.name == toolchain
                       or any(toolchain_answers(toolchain, t.name, r) for r in t.releases)),
                      None)
        if chosen is None:
            raise UnknownToolchain(toolchain, [_shown(t) for t in offer.toolchains])
    else:
        chosen = next((t for t in offer.toolchains if t.default), None)
    if chosen is None:
        return  # no worker online announces toolchains: the controller decides
    offered = sorted({place.target for place in chosen.targets})
    for target in targets:
        if target not in offered and (is_neutral(target) or target not in TARGETS
                                      or toolchain is not None):
            raise UnsupportedTarget(target, offered)


def _check_older_farm(health: Health, toolchain: str | None, targets: list[str]) -> None:
    if toolchain is not None and toolchain not in DEFAULT_CHANNELS:
        raise UsageError(f"+{toolchain}: this farm's controller is older than toolchain "
                         "selection (it builds with its one builder image): leave "
                         "+toolchain (and rust-toolchain.toml's channel) out, or upgrade it")
    for target in targets:
        if health.targets and target not in health.targets:
            raise UnsupportedTarget(target, sorted(health.targets))


def _shown(toolchain: ToolchainTargets) -> str:
    releases = [r for r in toolchain.releases if r != toolchain.name]
    return f"{toolchain.name} ({', '.join(releases)})" if releases else toolchain.name
