"""Which cargo arguments a build request may pass through, and why others are refused.

The one place that decides what a farm runs: the CLI maps its cargo-like flags
(`-p`, `--workspace`, `--example`, `-j`, `--timings`, …) into this same list, and
anything after `--` lands here too. An allow-list, with each flag's value checked:
the farm owns the target, the output directories, the profile and the message format,
so flags that change those are refused with the crossfarm option to use instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from crossfarm.shared.errors import InvalidCargoArgs

#: Flags without a value that `cargo build` and `cargo test` both take (a test run's
#: own, --no-run and --no-fail-fast, the farm sets itself).
_FLAGS = frozenset(
    {
        # package selection
        "--workspace", "--all",
        # target selection
        "--lib", "--bins", "--examples", "--tests", "--benches", "--all-targets",
        # features
        "--all-features", "--no-default-features",
        # the lock file and the network (the build runs offline whatever is asked)
        "--locked", "--frozen", "--offline",
        # output
        "-v", "--verbose", "-q", "--quiet", "--timings",
        "--keep-going", "--ignore-rust-version",
    }
)

_NAME = r"[A-Za-z0-9_*?\[\]][A-Za-z0-9_.*?\[\]-]{0,127}"
_FEATURE = r"[A-Za-z0-9_][A-Za-z0-9_.+/?:-]{0,127}"
#: Most jobs a build may ask cargo for; its container's CPU limit holds it anyway.
MAX_JOBS = 256


def _jobs(value: str) -> bool:
    return value == "default" or (value.isdigit() and 1 <= int(value) <= MAX_JOBS)


def _pattern(regex: str) -> Callable[[str], bool]:
    compiled = re.compile(regex)
    return lambda value: compiled.fullmatch(value) is not None


# name, name@version, or a glob of names
_SPEC = (_pattern(_NAME + r"(@[0-9A-Za-z.+-]{1,64})?"),
         "a package name, name@version or a glob of names")
# a bin, example, test or bench target's name, or a glob of them
_TARGET = (_pattern(_NAME), "a target name or a glob of names")
# `a`, `dep/feat`, `dep?/feat`, `dep:name`, separated by commas or spaces
_FEATURES = (_pattern(f"{_FEATURE}([ ,]+{_FEATURE})*[ ,]*"),
             "feature names, separated by commas or spaces")
_JOBS = (_jobs, f"a number of jobs from 1 to {MAX_JOBS}, or default")

#: Flags that take a value: the check of the value, and what it must be.
_WITH_VALUE: dict[str, tuple[Callable[[str], bool], str]] = {
    "-p": _SPEC, "--package": _SPEC, "--exclude": _SPEC,
    "--bin": _TARGET, "--example": _TARGET, "--test": _TARGET, "--bench": _TARGET,
    "-F": _FEATURES, "--features": _FEATURES,
    "-j": _JOBS, "--jobs": _JOBS,
}
#: Flags whose value may be written right after them (`-j4`, `-pfoo`), as cargo takes.
_SHORT_WITH_VALUE = frozenset({"-p", "-F", "-j"})

_REFUSED = {
    "--target": "choose targets with crossfarm's own --target",
    "--target-dir": "the farm chooses where outputs go",
    "--artifact-dir": "the farm chooses where outputs go",
    "--out-dir": "the farm chooses where outputs go",
    "--manifest-path": "run crossfarm in the crate directory or use crossfarm --manifest-path",
    "--release": "use crossfarm --release",
    "-r": "use crossfarm --release",
    "--profile": "use crossfarm --profile",
    "--no-run": "use crossfarm test --no-run (the farm then returns the test binaries)",
    "--no-fail-fast": "crossfarm test runs every test binary already, to count them all",
    "--message-format": "the farm reads cargo's JSON messages itself",
    "--config": "toolchain configuration is the builder image's",
    "-Z": "unstable flags need a nightly toolchain the builder image does not have",
}


def check_cargo_args(args: list[str]) -> list[str]:
    """Return `args` if all are allowed; else raise InvalidCargoArgs naming the first
    refused and why."""
    pending: str | None = None  # the flag whose value comes next
    for arg in args:
        if any(ord(char) < 32 for char in arg):
            raise InvalidCargoArgs(arg, "control characters are not allowed")
        if pending is not None:
            if arg.startswith("-"):
                raise InvalidCargoArgs(arg, "a value was expected after the previous flag")
            _check_value(pending, arg, arg)
            pending = None
        else:
            pending = _check_flag(arg)
    if pending is not None:
        raise InvalidCargoArgs(args[-1], "it needs a value")
    return args


def _check_flag(arg: str) -> str | None:
    """Check one flag (and its value, if written with it); returns the flag if its value
    is the next argument."""
    flag, value = _split(arg)
    if flag in _REFUSED:
        raise InvalidCargoArgs(arg, _REFUSED[flag])
    if flag in _WITH_VALUE:
        if value is None:
            return flag
        _check_value(flag, value, arg)
    elif flag == "--timings" and value is not None:
        if value != "html":
            raise InvalidCargoArgs(arg, "only the html report is stable (--timings or "
                                        "--timings=html)")
    elif value is not None or not _is_flag(flag):
        _refuse_unknown(arg)
    return None


def _split(arg: str) -> tuple[str, str | None]:
    """The flag and the value written with it (`--bin=x`, `-j4`), if any; every -Z… is -Z."""
    flag, has_value, value = arg.partition("=")
    if flag.startswith("-Z"):
        return "-Z", None
    if flag[:2] in _SHORT_WITH_VALUE and len(flag) > 2 and not has_value:
        return arg[:2], arg[2:]
    return flag, value if has_value else None


def _refuse_unknown(arg: str) -> None:
    if not arg.startswith("-"):
        raise InvalidCargoArgs(arg, "positional arguments are not passed to cargo")
    raise InvalidCargoArgs(arg, "not one of the cargo build flags the farm passes through")


def _is_flag(flag: str) -> bool:
    return flag in _FLAGS or re.fullmatch(r"-v{2,3}", flag) is not None


def _check_value(flag: str, value: str, arg: str) -> None:
    check, what = _WITH_VALUE[flag]
    if not check(value):
        raise InvalidCargoArgs(arg, f"{flag} takes {what}")
