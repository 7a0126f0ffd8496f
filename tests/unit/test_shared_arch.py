import pytest

from crossfarm.shared.arch import TARGETS, Arch, supported_targets, target_arch
from crossfarm.shared.errors import InvalidRequest, UnsupportedTarget


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("amd64", Arch.AMD64),
        ("x86_64", Arch.AMD64),
        ("x64", Arch.AMD64),
        ("arm64", Arch.ARM64),
        ("aarch64", Arch.ARM64),
        ("arm64v8", Arch.ARM64),
    ],
)
def test_every_alias_parses_to_its_architecture(name, expected):
    assert Arch.parse(name) is expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [("X86_64", Arch.AMD64), ("  aarch64\n", Arch.ARM64), ("AArch64 ", Arch.ARM64)],
)
def test_parsing_ignores_case_and_surrounding_space(name, expected):
    assert Arch.parse(name) is expected


@pytest.mark.parametrize("name", ["riscv64", "i686", "", "x86", "arm"])
def test_an_unknown_architecture_is_refused_with_the_known_names(name):
    with pytest.raises(ValueError, match="unknown architecture") as exc:
        Arch.parse(name)
    message = str(exc.value)
    for known in ("amd64", "x86_64", "x64", "arm64", "aarch64", "arm64v8"):
        assert known in message


def test_x86_64_linux_target_is_built_on_amd64():
    assert target_arch("x86_64-unknown-linux-gnu") is Arch.AMD64


def test_aarch64_linux_target_is_built_on_arm64():
    assert target_arch("aarch64-unknown-linux-gnu") is Arch.ARM64


def test_supported_targets_are_the_sorted_triples_of_the_table():
    assert supported_targets() == ["aarch64-unknown-linux-gnu", "x86_64-unknown-linux-gnu"]
    assert supported_targets() == sorted(TARGETS)


@pytest.mark.parametrize(
    "target", ["riscv64gc-unknown-linux-gnu", "x86_64-pc-windows-msvc", "aarch64", ""]
)
def test_an_unknown_triple_raises_unsupported_target_listing_the_supported_ones(target):
    with pytest.raises(UnsupportedTarget) as exc:
        target_arch(target)
    assert exc.value.target == target
    assert exc.value.supported == ["aarch64-unknown-linux-gnu", "x86_64-unknown-linux-gnu"]
    assert "x86_64-unknown-linux-gnu" in str(exc.value)
    assert "aarch64-unknown-linux-gnu" in str(exc.value)


def test_unsupported_target_is_an_invalid_request():
    with pytest.raises(InvalidRequest):
        target_arch("wasm32-unknown-unknown")
