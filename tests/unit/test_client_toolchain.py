"""The toolchain a crate asks for, and the farm's check of it before anything is sent."""

import pytest

from crossfarm.client.cli import _parser, parse_args
from crossfarm.client.toolchain import check_offer, crate_toolchain, read_toolchain_file
from crossfarm.shared.arch import Arch
from crossfarm.shared.errors import UsageError
from crossfarm.shared.wire import FarmTargets, TargetPlace, ToolchainTargets

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
WASM = "wasm32-unknown-unknown"


def test_rust_toolchain_toml_names_its_channel(tmp_path):
    path = tmp_path / "rust-toolchain.toml"
    path.write_text('[toolchain]\nchannel = "1.63"\ncomponents = ["clippy"]\n')
    assert read_toolchain_file(path) == "1.63"


def test_a_legacy_rust_toolchain_file_is_one_line(tmp_path):
    path = tmp_path / "rust-toolchain"
    path.write_text("1.63.0\n")
    assert read_toolchain_file(path) == "1.63.0"


@pytest.mark.parametrize(("text", "complaint"), [
    ('[toolchain]\npath = "/opt/rust"\n', "a toolchain by path is this machine's own"),
    ("[toolchain]\n", "no channel"),
    ('channel = "1.63"\n', "no \\[toolchain\\] table"),
    ('[toolchain]\nchannel = "../../etc"\n', "is not a toolchain name"),
    ("[toolchain\n", "not TOML"),
])
def test_a_toolchain_file_the_farm_cannot_follow_is_refused_saying_why(tmp_path, text,
                                                                        complaint):
    path = tmp_path / "rust-toolchain.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=complaint):
        read_toolchain_file(path)


def test_the_nearest_file_up_to_the_sent_root_counts_legacy_first(tmp_path):
    member = tmp_path / "crates" / "app"
    member.mkdir(parents=True)
    (tmp_path / "rust-toolchain.toml").write_text('[toolchain]\nchannel = "1.96"\n')
    assert crate_toolchain(member, tmp_path) == ("1.96", tmp_path / "rust-toolchain.toml")
    (tmp_path / "rust-toolchain").write_text("1.63\n")
    assert crate_toolchain(member, tmp_path)[0] == "1.63"
    assert crate_toolchain(member, member) is None  # nothing above the root sent


def _offer():
    def place(target, arch, native):
        return TargetPlace(target=target, arch=arch, native=native, workers=1)
    return FarmTargets(toolchains=[
        ToolchainTargets(name="1.63", releases=["1.63.0"], default=False,
                         targets=[place(WASM, None, [Arch.AMD64]),
                                  place(X86, Arch.AMD64, [Arch.AMD64])]),
        ToolchainTargets(name="1.96", releases=["1.96.0"], default=True,
                         targets=[place(X86, Arch.AMD64, [Arch.AMD64])]),
    ])


@pytest.mark.parametrize(("toolchain", "targets"), [
    ("1.63", [WASM, X86]), ("1.63.0", [X86]), (None, [X86]), ("stable", [X86]),
    # the default toolchain may wait for a worker of a table target's architecture
    (None, [ARM]),
])
def test_what_the_farm_offers_passes(toolchain, targets):
    check_offer(_offer(), toolchain, targets)


def test_an_unknown_toolchain_is_refused_listing_the_farms_before_upload():
    with pytest.raises(UsageError) as refused:
        check_offer(_offer(), "1.70", [X86])
    assert str(refused.value).startswith(
        "toolchain '1.70' is not on this farm; available: 1.63 (1.63.0), 1.96 (1.96.0)")
    assert "nothing was uploaded" in str(refused.value)


@pytest.mark.parametrize(("toolchain", "target"), [(None, WASM), ("1.63", ARM),
                                                    (None, "sparc64-unknown-linux-gnu")])
def test_a_target_the_toolchain_does_not_build_is_refused_before_upload(toolchain, target):
    with pytest.raises(UsageError, match="supported targets: "):
        check_offer(_offer(), toolchain, [target])


def test_test_takes_the_build_options_and_no_run():
    args = _parser().parse_args(["test", "--target", X86, "--no-run", "--release"])
    assert (args.command, args.targets, args.no_run, args.release) == (
        "test", [X86], True, True)


def test_a_leading_plus_toolchain_is_taken_as_cargo_takes_it():
    args = parse_args(["+1.63", "build", "--target", X86])
    assert (args.toolchain, args.command, args.targets) == ("1.63", "build", [X86])
    assert parse_args(["test", "--target", X86]).toolchain is None
