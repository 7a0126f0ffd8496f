import dataclasses

import pytest

from crossfarm.controller.routing import Route, route
from crossfarm.shared.arch import Arch
from crossfarm.shared.errors import UnsupportedTarget


def test_x86_64_target_routes_to_amd64_queue():
    assert route("x86_64-unknown-linux-gnu") == Route(
        target="x86_64-unknown-linux-gnu", arch=Arch.AMD64, queue="crossfarm.builds.amd64"
    )


def test_aarch64_target_routes_to_arm64_queue():
    assert route("aarch64-unknown-linux-gnu") == Route(
        target="aarch64-unknown-linux-gnu", arch=Arch.ARM64, queue="crossfarm.builds.arm64"
    )


@pytest.mark.parametrize(
    "target", ["aarch64-apple-darwin", "x86_64-unknown-linux-musl", "X86_64-unknown-linux-gnu"]
)
def test_an_unsupported_target_is_not_routed(target):
    with pytest.raises(UnsupportedTarget) as exc:
        route(target)
    assert exc.value.target == target
    assert exc.value.supported == ["aarch64-unknown-linux-gnu", "x86_64-unknown-linux-gnu"]


def test_a_route_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        route("x86_64-unknown-linux-gnu").queue = "elsewhere"  # type: ignore[misc]
