"""Which extra cargo arguments a build request may pass through, and why others are refused.

An allow-list: the farm owns the target, the output directories, the profile
and the message format, so flags that change those are refused with the
crossfarm option to use instead.
"""

from __future__ import annotations

from crossfarm.shared.errors import InvalidCargoArgs

_FLAGS = frozenset(
    {
        "--bins", "--lib", "--examples", "--all-targets", "--workspace", "--all",
        "--locked", "--frozen", "--offline", "--keep-going", "--ignore-rust-version",
        "-v", "-vv", "--verbose", "-q", "--quiet", "--all-features", "--no-default-features",
    }
)
_WITH_VALUE = frozenset(
    {"-p", "--package", "--bin", "--example", "--exclude", "-F", "--features", "-j", "--jobs"}
)
_REFUSED = {
    "--target": "choose targets with crossfarm's own --target",
    "--target-dir": "the farm chooses where outputs go",
    "--artifact-dir": "the farm chooses where outputs go",
    "--out-dir": "the farm chooses where outputs go",
    "--manifest-path": "run crossfarm in the crate directory or use crossfarm --manifest-path",
    "--release": "use crossfarm --release",
    "--profile": "use crossfarm --profile",
    "--message-format": "the farm reads cargo's JSON messages itself",
    "--config": "toolchain configuration is the builder image's",
    "-Z": "unstable flags need a nightly toolchain the builder image does not have",
}


def check_cargo_args(args: list[str]) -> list[str]:
    """Return `args` if all are allowed; else raise InvalidCargoArgs naming the first refused."""
    expect_value = False
    for arg in args:
        if any(ord(char) < 32 for char in arg):
            raise InvalidCargoArgs(arg, "control characters are not allowed")
        if expect_value:
            if arg.startswith("-"):
                raise InvalidCargoArgs(arg, "a value was expected after the previous flag")
            expect_value = False
        else:
            expect_value = _needs_value(arg)
    if expect_value:
        raise InvalidCargoArgs(args[-1], "it needs a value")
    return args


def _needs_value(arg: str) -> bool:
    """Check one flag; True if the next argument is its value."""
    flag, has_inline_value, _ = arg.partition("=")
    if flag.startswith("-Z"):
        flag = "-Z"
    if flag in _REFUSED:
        raise InvalidCargoArgs(arg, _REFUSED[flag])
    if flag in _WITH_VALUE:
        return not has_inline_value
    if flag in _FLAGS and not has_inline_value:
        return False
    if not arg.startswith("-"):
        raise InvalidCargoArgs(arg, "positional arguments are not passed to cargo build")
    raise InvalidCargoArgs(arg, "not one of the cargo build flags the farm passes through")
