import pytest

from crossfarm.controller.cargo_args import check_cargo_args
from crossfarm.shared.errors import InvalidCargoArgs, InvalidRequest


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--bin", "x"],
        ["--bin=x"],
        ["-p", "foo"],
        ["--package=foo"],
        ["--locked"],
        ["-v"],
        ["-vv"],
        ["--features", "a,b"],
        ["-F", "a"],
        ["--jobs", "4"],
        ["--exclude", "xtask", "--workspace"],
        ["--bin", "app", "--example", "demo", "--locked", "--frozen", "-q"],
    ],
    ids=lambda args: " ".join(args) or "nothing",
)
def test_an_allowed_flag_passes_through_unchanged(args):
    assert check_cargo_args(list(args)) == args


@pytest.mark.parametrize(
    ("args", "arg", "reason"),
    [
        (["--target", "aarch64-unknown-linux-gnu"], "--target", "crossfarm's own --target"),
        (
            ["--target=aarch64-unknown-linux-gnu"],
            "--target=aarch64-unknown-linux-gnu",
            "crossfarm's own --target",
        ),
        (["--target-dir=x"], "--target-dir=x", "the farm chooses where outputs go"),
        (["--target-dir", "x"], "--target-dir", "the farm chooses where outputs go"),
        (["--out-dir", "x"], "--out-dir", "the farm chooses where outputs go"),
        (["--release"], "--release", "use crossfarm --release"),
        (["--profile", "bench"], "--profile", "use crossfarm --profile"),
        (["--manifest-path", "a/Cargo.toml"], "--manifest-path", "crossfarm --manifest-path"),
        (["--config", "build.rustflags=[]"], "--config", "builder image"),
        (["-Z", "build-std"], "-Z", "nightly"),
        (["--message-format=json"], "--message-format=json", "reads cargo's JSON messages"),
        (["--locked", "--release"], "--release", "use crossfarm --release"),
    ],
)
def test_a_flag_the_farm_owns_is_refused_with_the_crossfarm_alternative(args, arg, reason):
    with pytest.raises(InvalidCargoArgs) as exc:
        check_cargo_args(args)
    assert exc.value.arg == arg
    assert reason in str(exc.value)


@pytest.mark.parametrize("args", [["--bin"], ["--locked", "-p"], ["--features"], ["-j"]])
def test_a_value_flag_at_the_end_needs_a_value(args):
    with pytest.raises(InvalidCargoArgs, match="needs a value") as exc:
        check_cargo_args(args)
    assert exc.value.arg == args[-1]


def test_a_value_flag_followed_by_a_flag_is_refused():
    with pytest.raises(InvalidCargoArgs, match="a value was expected") as exc:
        check_cargo_args(["--bin", "--release"])
    assert exc.value.arg == "--release"


@pytest.mark.parametrize("args", [["foo"], ["--locked", "build"], [""]])
def test_a_positional_argument_is_refused(args):
    with pytest.raises(InvalidCargoArgs, match="positional") as exc:
        check_cargo_args(args)
    assert exc.value.arg == args[-1]


@pytest.mark.parametrize(
    "arg", ["--frobnicate", "-x", "--verbose=2", "--locked=true", "-pfoo", "--"]
)
def test_an_unknown_flag_is_refused(arg):
    with pytest.raises(InvalidCargoArgs, match="not one of the cargo build flags") as exc:
        check_cargo_args([arg])
    assert exc.value.arg == arg


@pytest.mark.parametrize("arg", ["--locked\n", "--bin=a\x00b"])
def test_control_characters_in_a_flag_are_refused(arg):
    with pytest.raises(InvalidCargoArgs, match="control characters") as exc:
        check_cargo_args([arg])
    assert exc.value.arg == arg


def test_refused_arguments_are_invalid_requests():
    with pytest.raises(InvalidRequest):
        check_cargo_args(["--release"])


# The control-character check runs before flags only: a separate value skips it.
def test_control_characters_in_a_flag_value_are_refused():
    with pytest.raises(InvalidCargoArgs, match="control characters"):
        check_cargo_args(["--bin", "app\nmore"])


def test_any_unstable_z_flag_is_refused_with_the_nightly_reason():
    with pytest.raises(InvalidCargoArgs, match="nightly toolchain") as exc:
        check_cargo_args(["-Zbuild-std"])
    assert exc.value.arg == "-Zbuild-std"
