import pytest

from crossfarm.shared.arch import Arch
from crossfarm.shared.errors import BuildError, UnsupportedTarget
from crossfarm.shared.wire import BuildMode
from crossfarm.worker.images import build_mode

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"


@pytest.mark.parametrize(("target", "host"), [(X86, Arch.AMD64), (ARM, Arch.ARM64)])
def test_a_target_of_the_host_architecture_builds_natively(target, host):
    assert build_mode(target, host, []) is BuildMode.NATIVE


def test_native_wins_even_when_the_host_is_listed_as_a_cross_arch():
    assert build_mode(X86, Arch.AMD64, [Arch.AMD64, Arch.ARM64]) is BuildMode.NATIVE


@pytest.mark.parametrize(
    ("target", "host", "cross"),
    [(ARM, Arch.AMD64, [Arch.ARM64]), (X86, Arch.ARM64, [Arch.AMD64])],
)
def test_a_target_of_a_served_cross_arch_builds_with_the_cross_toolchain(target, host, cross):
    assert build_mode(target, host, cross) is BuildMode.CROSS


def test_a_target_this_worker_does_not_serve_is_a_build_error_that_says_what_to_set():
    with pytest.raises(BuildError) as exc:
        build_mode(ARM, Arch.AMD64, [])
    assert "amd64 worker does not serve arm64" in str(exc.value)
    assert "CROSSFARM_CROSS_ARCHES=arm64" in str(exc.value)
    assert exc.value.exit_code is None


def test_an_unsupported_target_is_refused_before_choosing_a_mode():
    with pytest.raises(UnsupportedTarget):
        build_mode("riscv64gc-unknown-linux-gnu", Arch.AMD64, [Arch.ARM64])
