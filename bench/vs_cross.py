#!/usr/bin/env python3
"""crossfarm against the tools a user would otherwise reach for, side by side in one run
(issue #11's goal): ripgrep 14.1.1 from crates.io (61 crates in its Cargo.lock) and
tests/fixtures/hello-c, each built for x86_64 by

  host      `cargo build` on this machine (rustup's toolchain)
  cross     `cross build` 0.2.5 with the builder image in Cross.toml (cross mounts the
            host's toolchain at /rust but puts it last on PATH: the image's cargo runs)
  docker    `docker run … cargo build` in the builder image, no network: the floor any
            per-build container pays
  crossfarm `crossfarm build` on a farm of this checkout that the bench starts (one
            worker building with the builder image, warm target dirs on, the result
            cache on)

The builder image is `crossfarm/builder-rustup:1` (`make images`: the builder with this
machine's rustup toolchain, so all four compile with the same rustc); `--image
crossfarm/builder:1` measures Debian's rustc-web instead.

in four phases: cold (a fresh clone, nothing built; crossfarm's farm is new too, its
dependency volume empty), no-op (the same command again), one-line change (a comment
added to the binary crate's main.rs; each of these two run --repeat times, 3 by default,
and the median kept) and a second clone (a copy of that tree elsewhere,
no target/). Crates are fetched before any timing for host, cross and docker (the
farm's worker fetches its own, inside its cold build). Prints seconds, the ratios the
issue sets as goals, and, for crossfarm, a timeline of each build as its CLI printed
it, to show where the time goes. Run by hand, under the integration lock:

    flock /tmp/crossfarm-integration.lock python3 bench/vs_cross.py [--profile dev]

Needs cargo (rustup), `cross` (cargo install cross --locked), Docker with the builder
image, redis-server and weed (as the integration tests do).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "deploy" / "local"))
import farm as localfarm  # noqa: E402
from deps_cache import importable, ripgrep  # noqa: E402

X86 = "x86_64-unknown-linux-gnu"
IMAGE = "crossfarm/builder-rustup:1"
TOOLS = ("host", "cross", "docker", "crossfarm")
PHASES = ("cold", "no-op", "one-line change", "second clone")
#: the file a one-line change goes into, per project
MAIN = {"ripgrep": "crates/core/main.rs", "hello-c": "src/main.rs"}
DEPS_VOLUME = "crossfarm-bench-vs-cross-deps"


@dataclass
class Run:
    """One build: its wall seconds, and (crossfarm) the CLI's stderr lines with the
    second each arrived."""

    seconds: float
    timeline: list[tuple[float, str]] = field(default_factory=list)
    job: dict | None = None


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> Run:
    """Run a build; its stderr is read line by line, each line stamped on arrival."""
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        lines = [(time.monotonic() - started, line.rstrip("\n")) for line in proc.stderr]
        code = proc.wait()
        seconds = time.monotonic() - started
        out.seek(0)
        stdout = out.read().decode(errors="replace")
    if code != 0:
        tail = "\n".join(line for _, line in lines[-30:])
        raise SystemExit(f"{' '.join(argv)} in {cwd} failed with exit code {code}:\n{tail}")
    run = Run(seconds, lines)
    if "crossfarm.client" in argv:
        [run.job] = json.loads(stdout)["build"]["jobs"]
    return run


def profile_flags(profile: str) -> list[str]:
    return ["--release"] if profile == "release" else []


def host_build(profile: str, home: Path) -> Callable[[Path], Run]:
    env = {**os.environ, "CARGO_HOME": str(home)}
    return lambda crate: timed(["cargo", "build", "--locked", "--offline", "--target", X86,
                                *profile_flags(profile)], crate, env)


def cross_build(profile: str, home: Path, image: str) -> Callable[[Path], Run]:
    env = {**os.environ, "CARGO_HOME": str(home), "CROSS_CONTAINER_ENGINE": "docker"}

    def build(crate: Path) -> Run:
        # written once: a new Cross.toml is a changed file of the package, so cargo would
        # rebuild a crate without rerun-if-changed lines (ripgrep) on every "no-op"
        config, text = crate / "Cross.toml", f'[target.{X86}]\nimage = "{image}"\n'
        if not config.exists() or config.read_text() != text:
            config.write_text(text)
        return timed(["cross", "build", "--locked", "--offline", "--target", X86,
                      *profile_flags(profile)], crate, env)
    return build


def docker_build(profile: str, home: Path, image: str) -> Callable[[Path], Run]:
    def build(crate: Path) -> Run:
        # as root, as cross runs it here: the image's own user cannot write the clone;
        # the image's linker for its own target dropped, as the farm drops it (rustup's
        # x86_64 toolchain then links with its rust-lld, as on the host)
        return timed(["docker", "run", "--rm", "--network", "none", "--user", "0:0",
                      "-e", f"CARGO_TARGET_{X86.upper().replace('-', '_')}_LINKER",
                      "-v", f"{crate}:/src", "-v", f"{home}:/cargo-home",
                      "-e", "CARGO_HOME=/cargo-home", "-e", "CARGO_TARGET_DIR=/src/target",
                      "-w", "/src", image, "cargo", "build", "--locked", "--offline",
                      "--target", X86, *profile_flags(profile)], crate, dict(os.environ))
    return build


def cli_env(running: localfarm.Farm) -> dict[str, str]:
    """The CLI's environment: the farm's, with bytecode caching on as in any install (pip
    compiles it): a PYTHONDONTWRITEBYTECODE=1 inherited from the shell made every run
    compile crossfarm's modules from source, which no user pays."""
    env = running.env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def farm_build(profile: str, running: localfarm.Farm) -> Callable[[Path], Run]:
    env = cli_env(running)
    return lambda crate: timed([sys.executable, "-m", "crossfarm.client", "build",
                                "--target", X86, "--json", *profile_flags(profile)],
                               crate, env)


def fresh_clone(pristine: Path, into: Path) -> Path:
    """A copy of `pristine` with no target/, as a new checkout would be."""
    shutil.copytree(pristine, into, ignore=shutil.ignore_patterns("target", "Cross.toml"))
    return into


def one_line_change(crate: Path, project: str) -> None:
    main = crate / MAIN[project]
    text = main.read_text()
    main.write_text(text + f"\n// one-line change {text.count('// one-line change') + 1}\n")


def phases(build: Callable[[Path], Run], pristine: Path, project: str, work: Path,
           second_clone: bool, repeat: int) -> dict[str, Run]:
    """Cold, then the no-op and the one-line change `repeat` times each (each one-line
    change a new line), each phase's median run kept: single runs of a few seconds moved
    by a second from one to the next on this machine."""
    def say(phase: str, seconds: list[float]) -> None:  # as it goes: a later failure
        shown = ", ".join(f"{s:.2f}" for s in seconds)  # loses no figure
        print(f"  {phase}: {shown} s", file=sys.stderr, flush=True)

    def median(phase: str, runs_of: Callable[[], Run]) -> Run:
        done = [runs_of() for _ in range(repeat)]
        say(phase, [run.seconds for run in done])
        return sorted(done, key=lambda run: run.seconds)[len(done) // 2]

    first = fresh_clone(pristine, work / "clone-1")
    runs = {"cold": build(first)}
    say("cold", [runs["cold"].seconds])
    runs["no-op"] = median("no-op", lambda: build(first))

    def changed() -> Run:
        one_line_change(first, project)
        return build(first)
    runs["one-line change"] = median("one-line change", changed)
    if second_clone:
        runs["second clone"] = build(fresh_clone(first, work / "clone-2"))
        say("second clone", [runs["second clone"].seconds])
    return runs


def start_farm(work: Path, image: str) -> localfarm.Farm:
    (work / "farm").mkdir()
    running = localfarm.Farm(dir=work / "farm")
    running.start_redis()
    running.start_s3()
    running.start_controller()
    running.start_worker("bench-vs-cross", CROSSFARM_WARM_BYTES=str(20 * 1024**3),
                         CROSSFARM_JOB_DISK_BYTES="0", CROSSFARM_CONCURRENCY="1",
                         CROSSFARM_DEPS_VOLUME=DEPS_VOLUME,
                         CROSSFARM_BUILDER_IMAGE=image, CROSSFARM_TOOLCHAINS="")
    wait_for_image_volumes(image)
    return running


def wait_for_image_volumes(image: str, timeout_s: float = 300) -> None:
    """Until the worker's start-up copy of the image's trees is done, where the engine's
    storage driver makes it copy them (worker/image_volumes.py): a worker's first builds
    read the image meanwhile, which this bench does not mean to measure."""
    from crossfarm.worker import image_volumes

    driver = subprocess.run(["docker", "info", "--format", "{{.Driver}}"],
                            capture_output=True, text=True).stdout.strip()
    if not image_volumes.wanted("auto", driver):
        return
    image_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image],
                              capture_output=True, text=True, check=True).stdout.strip()
    marker = image_volumes.marker_name(image_id)
    deadline = time.monotonic() + timeout_s
    while subprocess.run(["docker", "volume", "inspect", marker],
                         capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"the worker did not copy {image}'s trees in {timeout_s:.0f} s")
        time.sleep(0.5)


def clean_docker() -> None:
    """The farm's warm dirs and dependency volume of this bench go with it."""
    warm = subprocess.run(["docker", "volume", "ls", "-q", "--filter",
                           "label=io.crossfarm.warm=bench-vs-cross"],
                          capture_output=True, text=True).stdout.split()
    for volume in [*warm, DEPS_VOLUME]:
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)


def cli_start_up(env: dict[str, str]) -> tuple[float, float]:
    """Median seconds of a bare `python3 -c pass` and of the CLI's start-up (`crossfarm
    config`: every import, the configuration read, no request), of 5 each."""
    def median(argv: list[str]) -> float:
        times = []
        for _ in range(5):
            started = time.monotonic()
            subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
            times.append(time.monotonic() - started)
        return sorted(times)[2]
    return (median([sys.executable, "-c", "pass"]),
            median([sys.executable, "-m", "crossfarm.client", "config"]))


def report(project: str, results: dict[str, dict[str, Run]]) -> None:
    print(f"\n{project} ({X86}): seconds")
    tools = [tool for tool in TOOLS if tool in results]
    print(f"{'phase':<17}" + "".join(f"{tool:>11}" for tool in tools))
    for phase in PHASES:
        print(f"{phase:<17}" + "".join(
            f"{results[tool][phase].seconds:>11.2f}" if phase in results[tool] else
            f"{'-':>11}" for tool in tools))
    if not {"host", "cross", "crossfarm"} <= set(results):
        left_out = sorted({"host", "cross", "crossfarm"} - set(results))
        print(f"  goals not judged: {', '.join(left_out)} not run (--tools)")
        return
    farm, host, cross = results["crossfarm"], results["host"], results["cross"]

    def s(runs: dict[str, Run], phase: str) -> float:
        return runs[phase].seconds if phase in runs else float("nan")

    goals = [
        ("cold: crossfarm / host <= 1.05", s(farm, "cold") / s(host, "cold"), 1.05),
        ("no-op: crossfarm seconds <= 0.3", s(farm, "no-op"), 0.3),
        ("no-op: crossfarm / cross <= 0.25", s(farm, "no-op") / s(cross, "no-op"), 0.25),
        ("one-line: crossfarm / host <= 1.2",
         s(farm, "one-line change") / s(host, "one-line change"), 1.2),
        ("one-line: crossfarm / cross < 1",
         s(farm, "one-line change") / s(cross, "one-line change"), 1.0),
        ("second clone: crossfarm / cross <= 0.25",
         s(farm, "second clone") / s(cross, "second clone"), 0.25),
    ]
    for label, value, bound in goals:
        verdict = "met" if value <= bound else "MISSED" if value == value else "not measured"
        print(f"  {label:<42} {value:>7.2f}  {verdict}")


def farm_timeline(project: str, runs: dict[str, Run]) -> None:
    """Where crossfarm's seconds went: the CLI's own notes and the worker's timed steps,
    at the second the CLI printed them."""
    for phase in (phase for phase in PHASES if phase in runs):
        run = runs[phase]
        job = run.job or {}
        cache = "cached" if job.get("cached_from") else job.get("reuse")
        print(f"\n{project}, crossfarm, {phase}: {run.seconds:.2f} s; cache: {cache}")
        for at, line in run.timeline:
            if any(mark in line for mark in ("crossfarm: build ", "source ", "sent ",
                                             " took ", "warm target dir", "cold target",
                                             "succeeded", "sha256", " on bench-", "→",
                                             "crossfarm: artifacts: ")):
                print(f"  {at:7.2f}  {line[:150]}")


def check_tools(tools: list[str]) -> None:
    """Before anything starts: a missing tool would otherwise end the run half way."""
    missing = [binary for tool, binary in (("host", "cargo"), ("cross", "cross"),
                                           ("docker", "docker"))
               if tool in tools and shutil.which(binary) is None]
    if missing:
        raise SystemExit(f"not found on PATH: {', '.join(missing)} (cross: cargo install "
                         "cross --version 0.2.5 --locked, the version these figures use); "
                         "or leave its tool out with --tools, and its column and the goals "
                         "against it are not measured")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("release", "dev"), default="release")
    parser.add_argument("--projects", default="ripgrep,hello-c")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of the no-op and of the one-line change (the median kept)")
    parser.add_argument("--image", default=IMAGE,
                        help="the builder image of cross, docker and the farm's worker")
    parser.add_argument("--clone-tools", default=",".join(TOOLS),
                        help="the tools whose second clone is built (for the others it "
                             "is a cold build again, and is left out to save time)")
    args = parser.parse_args()
    tools = args.tools.split(",")
    check_tools(tools)
    load_at_start = Path("/proc/loadavg").read_text().split()[:3]
    # stopped (a `timeout`, a kill), the farm it started and its volumes still go
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="crossfarm-vs-cross-") as tmp:
        work = Path(tmp)
        os.environ["PYTHONPATH"] = str(importable(REPO, work / "path"))
        pristine = {"ripgrep": ripgrep(work), "hello-c": work / "hello-c"}
        shutil.copytree(REPO / "tests" / "fixtures" / "hello-c", pristine["hello-c"])
        home = work / "cargo-home"
        for project in args.projects.split(","):  # crates for host, cross and docker
            subprocess.run(["cargo", "fetch", "--locked", "-q"], cwd=pristine[project],
                           check=True, env={**os.environ, "CARGO_HOME": str(home)})
        running = start_farm(work, args.image) if "crossfarm" in tools else None
        builders: dict[str, Callable[[Path], Run]] = {
            "host": host_build(args.profile, home),
            "cross": cross_build(args.profile, home, args.image),
            "docker": docker_build(args.profile, home, args.image),
        }
        if running is not None:
            builders["crossfarm"] = farm_build(args.profile, running)
        results: dict[str, dict[str, dict[str, Run]]] = {}
        try:
            for project in args.projects.split(","):
                for tool in tools:
                    print(f"{project}: {tool} …", file=sys.stderr, flush=True)
                    results.setdefault(project, {})[tool] = phases(
                        builders[tool], pristine[project], project,
                        work / f"{project}-{tool}", tool in args.clone_tools.split(","),
                        args.repeat)
            start_up = cli_start_up(cli_env(running)) if running is not None else None
        finally:
            if running is not None:
                running.stop()
                clean_docker()
            # containers of cross and docker ran as root: their files are root's too
            shutil.rmtree(work, ignore_errors=True)
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\nprofile {args.profile}, image {args.image}; load average at the start "
          f"{' '.join(load_at_start)}, "
          f"at the end {' '.join(load)} on {os.cpu_count()} cpus")
    for project, by_tool in results.items():
        report(project, by_tool)
    if start_up is not None:
        bare, cli = start_up
        print(f"\nCLI start-up: python3 -c pass {bare:.2f} s; `crossfarm config` {cli:.2f} s")
    for project, by_tool in results.items():
        if "crossfarm" in by_tool:
            farm_timeline(project, by_tool["crossfarm"])


if __name__ == "__main__":
    main()
