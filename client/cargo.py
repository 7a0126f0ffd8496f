"""cargo's own flags, as `crossfarm build` and `crossfarm test` take them.

Declared once for both commands (`add_cargo_flags`), read into one typed
`CargoOptions`, and mapped to the request's cargo spec: features and the profile into
their fields, every other flag into the spec's cargo arguments, which the controller's
allow-list (controller/cargo_args.py) checks like anything passed after `--`. So what
a farm runs is decided there, and only there.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from crossfarm.client.build import first_error
from crossfarm.shared.errors import UsageError
from crossfarm.shared.wire import CargoSpec, Command

#: cargo's target-selection flags that name targets, and their plural "all of them" forms.
_NAMED_TARGETS = (("bin", "bins"), ("example", "examples"), ("test", "tests"),
                  ("bench", "benches"))


@dataclass(frozen=True)
class CargoOptions:
    """What a user asked cargo for, as crossfarm build/test read it from the command line."""

    #: `cargo build` or `cargo test` (crossfarm build or crossfarm test)
    command: Command = Command.BUILD
    #: `+toolchain` before the command, else the crate's rust-toolchain(.toml) channel
    #: (None: the farm's default)
    toolchain: str | None = None
    packages: tuple[str, ...] = ()
    workspace: bool = False
    exclude: tuple[str, ...] = ()
    lib: bool = False
    #: named targets by kind ("bin", "example", "test", "bench"): the names given
    targets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: kinds of which every target was asked for ("bins", "examples", "tests", "benches")
    all_of: tuple[str, ...] = ()
    all_targets: bool = False
    features: tuple[str, ...] = ()
    all_features: bool = False
    no_default_features: bool = False
    jobs: str | None = None
    #: -v given this many times (at most 2, as -vv)
    verbose: int = 0
    quiet: bool = False
    locked: bool = False
    frozen: bool = False
    offline: bool = False
    #: cargo's HTML timing report, which comes back as an artifact
    timings: bool = False
    #: crossfarm test only: build the tests and return them, do not run them (a field of
    #: the test request, not a cargo argument: the farm adds --no-run itself)
    no_run: bool = False
    #: extra cargo arguments given after `--`
    extra: tuple[str, ...] = ()

    def cargo_args(self, member: str | None = None) -> list[str]:
        """The cargo arguments these options stand for (features and the profile aside,
        which the spec carries in fields of their own). `member`: the workspace member
        the CLI runs in, built alone unless packages or the workspace were named."""
        packages = self.packages or ((member,) if member and not self.workspace else ())
        args = [f"--package={p}" for p in packages]
        args += ["--workspace"] if self.workspace else []
        args += [f"--exclude={p}" for p in self.exclude]
        args += ["--lib"] if self.lib else []
        for kind, every in _NAMED_TARGETS:
            args += [f"--{kind}={name}" for name in self.targets.get(kind, ())]
            args += [f"--{every}"] if every in self.all_of else []
        args += ["--all-targets"] if self.all_targets else []
        args += [f"--jobs={self.jobs}"] if self.jobs else []
        args += ["-" + "v" * self.verbose] if self.verbose else []
        for name in ("quiet", "locked", "frozen", "offline", "timings"):
            args += [f"--{name}"] if getattr(self, name) else []
        return args + list(self.extra)

    def spec(self, profile: str, member: str | None = None) -> CargoSpec:
        """The request's cargo spec; UsageError on a feature or profile name cargo would
        not take."""
        try:
            return CargoSpec(
                command=self.command, no_run=self.no_run, toolchain=self.toolchain,
                profile=profile,
                features=[f for group in self.features for f in group.replace(",", " ").split()],
                all_features=self.all_features, no_default_features=self.no_default_features,
                cargo_args=self.cargo_args(member),
            )
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise UsageError(f"--features or --profile: {first_error(exc)}") from None


def add_cargo_flags(parser: argparse.ArgumentParser, test: bool) -> None:
    """Declare cargo's flags on `crossfarm build` (test=False) or `crossfarm test`."""
    verb = "test" if test else "build"
    packages = parser.add_argument_group("package selection (as cargo)")
    packages.add_argument("-p", "--package", action="append", default=[], metavar="SPEC",
                          help=f"{verb} this package (default: the member you are in)")
    packages.add_argument("--workspace", "--all", action="store_true",
                          help=f"{verb} every member of the workspace")
    packages.add_argument("--exclude", action="append", default=[], metavar="SPEC",
                          help="with --workspace: leave this package out")
    targets = parser.add_argument_group("target selection (as cargo)")
    targets.add_argument("--lib", action="store_true", help="only the library")
    for kind, every in _NAMED_TARGETS:
        targets.add_argument(f"--{kind}", action="append", default=[], metavar="NAME",
                             help=f"only this {kind} target")
        targets.add_argument(f"--{every}", action="store_true", help=f"every {kind} target")
    targets.add_argument("--all-targets", action="store_true", help="every target")
    features = parser.add_argument_group("features (as cargo)")
    features.add_argument("-F", "--features", action="append", default=[],
                          help="features to enable (comma or space separated)")
    features.add_argument("--all-features", action="store_true")
    features.add_argument("--no-default-features", action="store_true")
    build = parser.add_argument_group("compilation (as cargo)")
    profile = build.add_mutually_exclusive_group()
    profile.add_argument("-r", "--release", action="store_true", help="the release profile")
    profile.add_argument("--profile", help="a named cargo profile")
    build.add_argument("-j", "--jobs", type=_jobs, metavar="N",
                       help="parallel jobs on the worker (default: its CPUs for builds)")
    build.add_argument("--timings", action="store_true",
                       help="cargo's HTML timing report, downloaded beside the artifacts")
    talk = build.add_mutually_exclusive_group()
    talk.add_argument("-v", "--verbose", action="count", default=0,
                      help="cargo's verbose output (-vv: very verbose)")
    talk.add_argument("-q", "--quiet", action="store_true", help="no cargo output")
    manifest = parser.add_argument_group("lock file (as cargo; the farm builds offline)")
    manifest.add_argument("--locked", action="store_true",
                          help="fail if Cargo.lock is missing or out of date")
    manifest.add_argument("--frozen", action="store_true", help="--locked and --offline")
    manifest.add_argument("--offline", action="store_true")
    if test:  # the farm runs every test binary (cargo's --no-fail-fast), to count them all
        parser.add_argument("--no-run", action="store_true",
                            help="build the tests and download them; run nothing")


def cargo_options(args: argparse.Namespace, toolchain: str | None) -> CargoOptions:
    """The cargo options of a parsed build/test command line, built with `toolchain`;
    UsageError names what cargo itself would refuse."""
    if args.exclude and not args.workspace:
        raise UsageError("--exclude goes with --workspace (as in cargo)")
    if args.verbose > 2:
        raise UsageError("-v goes at most twice (-vv), as in cargo")
    return CargoOptions(
        command=Command.TEST if args.command == "test" else Command.BUILD,
        toolchain=toolchain,
        packages=tuple(args.package), workspace=args.workspace, exclude=tuple(args.exclude),
        lib=args.lib,
        targets={kind: tuple(getattr(args, kind)) for kind, _ in _NAMED_TARGETS
                 if getattr(args, kind)},
        all_of=tuple(every for _, every in _NAMED_TARGETS if getattr(args, every)),
        all_targets=args.all_targets,
        features=tuple(args.features), all_features=args.all_features,
        no_default_features=args.no_default_features,
        jobs=args.jobs, verbose=args.verbose, quiet=args.quiet,
        locked=args.locked, frozen=args.frozen, offline=args.offline, timings=args.timings,
        no_run=getattr(args, "no_run", False),
        extra=tuple(args.cargo_args),
    )


def _jobs(text: str) -> str:
    if text == "default" or (text.isdigit() and int(text) > 0):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of jobs")
