#!/usr/bin/env python3
"""aarch64 three ways in one run (issue #12): real crates built for
aarch64-unknown-linux-gnu

  native    on a truly-arm64 worker: the production arm64 controller/worker image and
            arm64 builder (`make images`) run as a container worker. On this x86_64
            machine both run under QEMU user emulation, so this is a lower bound of what
            real ARM hardware does: there it would be the fastest of the three
  cross     the amd64 worker's cross toolchain (placement cross-ok, no arm64 worker)
  emulated  the arm64 builder under QEMU on the amd64 worker (placement emulate-ok, no
            arm64 worker and no cross toolchain online)

and `cargo test` (what `crossfarm test` submits) for aarch64 natively and under
emulation, the pass/fail/ignored counts checked. Host `cargo build` for x86_64 is a
reference line. Prints seconds and ratios against cross mode.

The bench starts its own farm (Redis, SeaweedFS, controller on free loopback ports) and
one worker at a time, so each mode is the only one on offer: a worker that fills an
empty dependency volume with the crates (x86_64 builds, not part of the comparison),
the arm64 container worker, an amd64 worker with a cross toolchain, an amd64 worker
with an emulated arm64 builder. Every job has a cold target dir and the result cache
off. Run by hand, under the integration lock:

    flock /tmp/crossfarm-integration.lock python3 bench/arm64_vs_cross.py \\
        [--projects hello-c,ripgrep] [--profile dev]

Needs the images of `make images`, cargo (rustup), redis-server and weed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send
from crossfarm.shared.arch import BuildMode, Placement
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import BuildRequest, CargoSpec, Command, JobView

REPO = Path(__file__).resolve().parents[1]
# The local-farm launcher and the other benches are scripts, not package modules.
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "deploy" / "local"))
import farm as localfarm  # noqa: E402
from deps_cache import importable, ripgrep  # noqa: E402
from vs_cross import fresh_clone, host_build  # noqa: E402

ARM = "aarch64-unknown-linux-gnu"
X86 = "x86_64-unknown-linux-gnu"
# the production arm64 images, as `make images` tags them (Makefile)
ARM64_WORKER_IMAGE = "crossfarm/crossfarm:test-arm64"
ARM64_BUILDER_IMAGE = "crossfarm/builder:1-arm64"
DEPS_VOLUME = "crossfarm-bench-arm64-deps"
MODES = (BuildMode.NATIVE, BuildMode.CROSS, BuildMode.EMULATED)
PLACEMENT = {BuildMode.NATIVE: Placement.NATIVE, BuildMode.CROSS: Placement.CROSS_OK,
             BuildMode.EMULATED: Placement.EMULATE_OK}
#: the crate whose tests are run, and the counts (passed, failed, ignored) it must report:
#: one of its tests fails on purpose (tests/fixtures/tested/src/lib.rs)
TESTED = "tested"
TESTED_COUNTS = (3, 1, 1)
#: Builds under QEMU hang in a fork now and then (a known class of qemu-user bugs; seen
#: in this bench: cargo and its forked child idle, no CPU, for minutes): the job's own
#: limit ends one, and it shows as no figure. ripgrep took up to 352 s under QEMU here.
JOB_TIMEOUT_S = 900
#: the farm's processes and worker containers (no other worker: one mode on offer at a time)
FARM_WORKER = {"CROSSFARM_JOB_DISK_BYTES": "0", "CROSSFARM_DEPS_VOLUME": DEPS_VOLUME,
               "CROSSFARM_HEARTBEAT_S": "2", "CROSSFARM_CONCURRENCY": "1"}


@dataclass(frozen=True)
class Timed:
    """One job: wall seconds from submit to its end, and the job as the farm reports it."""

    seconds: float
    job: JobView

    @property
    def on_worker_s(self) -> float:
        """From the worker's start of the job to its end (no queueing, no placing)."""
        job = self.job
        if job.started_at is None or job.finished_at is None:
            return math.nan
        return (job.finished_at - job.started_at).total_seconds()


def problems(job: JobView, mode: BuildMode, counts: tuple[int, int, int] | None) -> list[str]:
    """What makes a job's time no figure of `mode`: another mode, a failure, or (a test
    job, `counts` given) test counts other than `counts`."""
    found = []
    if job.mode is not mode:
        found.append(f"ran {job.mode.value if job.mode else 'in no mode'}, not {mode.value}")
    if counts is None:
        if job.state is not BuildState.SUCCEEDED:
            found.append(f"{job.state.value}: {job.reason or 'no reason given'}")
        return found
    tests = job.tests
    if tests is None or not tests.ran:
        found.append(f"no test counts ({job.state.value}: {job.reason or 'no reason given'})")
    elif (tests.passed, tests.failed, tests.ignored) != counts:
        found.append(f"tests {tests.passed} passed, {tests.failed} failed, {tests.ignored} "
                     f"ignored; expected {counts[0]}, {counts[1]}, {counts[2]}")
    return found


def ratio(value: float, base: float) -> str:
    """`value / base` as a factor ("6.1x"), or "-" when either is not a figure."""
    if not (value > 0 and base > 0) or math.isinf(value) or math.isinf(base):
        return "-"
    return f"{value / base:.1f}x"


def seconds(run: Timed | None, bad: bool = False) -> float:
    return math.nan if run is None or bad else run.seconds


def fmt(value: float, width: int) -> str:
    """Seconds to one decimal, right-aligned; "-" when not a figure."""
    return f"{value:>{width}.1f}" if value == value else f"{'-':>{width}}"


def build_table(profile: str, host: dict[str, float], builds: dict[str, dict[BuildMode, Timed]],
                bad: set[tuple[str, str]]) -> list[str]:
    """Seconds per crate and mode, and each mode's ratio to cross mode; a job that did
    not run as asked (in `bad`, by crate and mode) shows no figure."""
    lines = [f"{'crate (' + profile + ')':<20}{'host x86_64':>12}{'cross':>9}{'native':>9}"
             f"{'emulated':>10}{'host/cross':>12}{'native/cross':>14}{'emulated/cross':>16}"]
    for crate, runs in builds.items():
        s = {mode: seconds(runs.get(mode), (crate, mode.value) in bad) for mode in MODES}
        lines.append(
            f"{crate:<20}{fmt(host.get(crate, math.nan), 12)}{fmt(s[BuildMode.CROSS], 9)}"
            f"{fmt(s[BuildMode.NATIVE], 9)}{fmt(s[BuildMode.EMULATED], 10)}"
            f"{ratio(host.get(crate, math.nan), s[BuildMode.CROSS]):>12}"
            f"{ratio(s[BuildMode.NATIVE], s[BuildMode.CROSS]):>14}"
            f"{ratio(s[BuildMode.EMULATED], s[BuildMode.CROSS]):>16}")
    return lines


def timed_job(client: FarmClient, source: str, target: str, placement: Placement,
              cargo: CargoSpec) -> Timed:
    started = time.monotonic()
    build = client.submit(BuildRequest(source=source, targets=[target], cargo=cargo,
                                       placement=placement, timeout_s=JOB_TIMEOUT_S,
                                       cache=False))  # each run is timed on a worker
    for _ in client.events(build.build_id):
        pass
    [job] = client.build(build.build_id).jobs
    return Timed(time.monotonic() - started, job)


class Bench:
    """The farm the bench started, the crates it sent, and what it measured."""

    def __init__(self, farm: localfarm.Farm, client: FarmClient, sources: dict[str, str],
                 profile: str) -> None:
        self.farm, self.client, self.sources, self.profile = farm, client, sources, profile
        self.builds: dict[str, dict[BuildMode, Timed]] = {}
        self.tests: dict[BuildMode, Timed] = {}
        self.bad: set[tuple[str, str]] = set()
        self.notes: list[str] = []

    def say(self, line: str) -> None:  # as it goes: a later failure loses no figure
        print(line, file=sys.stderr, flush=True)
        self.notes.append(line)

    def run(self, crate: str, mode: BuildMode, command: Command = Command.BUILD) -> Timed:
        cargo = CargoSpec(command=command, profile=self.profile)
        done = timed_job(self.client, self.sources[crate], ARM, PLACEMENT[mode], cargo)
        counts = TESTED_COUNTS if command is Command.TEST else None
        wrong = problems(done.job, mode, counts)
        if wrong:
            self.bad.add((crate if command is Command.BUILD else "test", mode.value))
        tests = done.job.tests
        counted = (f"; {tests.passed} passed, {tests.failed} failed, {tests.ignored} ignored"
                   if tests and tests.ran else "")
        self.say(f"  {command.value} {crate} {mode.value}: {done.seconds:.1f} s "
                 f"({done.on_worker_s:.1f} s on {done.job.worker}){counted}"
                 + (f"  NOT A FIGURE: {'; '.join(wrong)}" if wrong else ""))
        return done

    def phase(self, mode: BuildMode, crates: list[str], with_tests: bool) -> None:
        for crate in crates:
            self.builds.setdefault(crate, {})[mode] = self.run(crate, mode)
        if with_tests:
            self.tests[mode] = self.run(TESTED, mode, Command.TEST)


@contextmanager
def worker(farm: localfarm.Farm, name: str, **extra: str) -> Iterator[None]:
    """One amd64 worker process of the farm, gone from the fleet when this ends."""
    farm.start_worker(name, **FARM_WORKER, **extra)
    try:
        yield
    finally:
        farm.stop_process(name)
        gone(farm, name)


@contextmanager
def arm64_worker(bench: Bench) -> Iterator[None]:
    started = time.monotonic()
    container = bench.farm.start_container_worker(
        "bench-arm64", ARM64_WORKER_IMAGE, ARM64_BUILDER_IMAGE, REPO, **FARM_WORKER)
    bench.say(f"  the arm64 container worker came online in {time.monotonic() - started:.1f} s")
    try:
        yield
    finally:
        bench.farm.stop_container(container, timeout_s=10)
        gone(bench.farm, "bench-arm64")


def gone(farm: localfarm.Farm, name: str) -> None:
    """Wait until the fleet no longer counts `name` as online, so that placement offers
    the next mode only (no figure depends on this wait)."""
    deadline = time.monotonic() + 120
    while farm.worker_state(name) == "online":
        if time.monotonic() > deadline:
            raise SystemExit(f"the controller still counts worker {name} online")
        time.sleep(0.5)


def crates(work: Path, names: list[str]) -> dict[str, Path]:
    """The crates to build, hello-c and the test fixture copied, ripgrep from crates.io."""
    found = {}
    for name in names:
        if name == "ripgrep":
            found[name] = ripgrep(work)
        else:
            found[name] = shutil.copytree(REPO / "tests" / "fixtures" / name, work / name)
    return found


def host_times(pristine: dict[str, Path], profile: str, work: Path) -> dict[str, float]:
    """Host `cargo build` for x86_64 of each crate in a fresh clone, crates fetched first."""
    home = work / "cargo-home"
    env = {**os.environ, "CARGO_HOME": str(home)}
    times = {}
    for name, tree in pristine.items():
        subprocess.run(["cargo", "fetch", "--locked", "-q"], cwd=tree, check=True, env=env)
        times[name] = host_build(profile, home)(fresh_clone(tree, work / f"host-{name}")).seconds
        print(f"  host cargo build {name} {X86}: {times[name]:.1f} s", file=sys.stderr,
              flush=True)
    return times


def heading(phase: str) -> None:
    print(f"{phase} (load average {loadavg()}):", file=sys.stderr, flush=True)


def measure(bench: Bench, names: list[str]) -> None:
    heading("dependencies into the bench's empty volume (x86_64 builds, not compared)")
    with worker(bench.farm, "bench-deps"):
        for crate in [*names, TESTED]:
            cargo = CargoSpec(profile=bench.profile)
            done = timed_job(bench.client, bench.sources[crate], X86, Placement.NATIVE, cargo)
            bench.say(f"  {crate} {X86}: {done.job.state.value} in {done.seconds:.1f} s")
    heading("native (the arm64 container worker)")
    with arm64_worker(bench):
        bench.phase(BuildMode.NATIVE, names, with_tests=True)
    heading("cross (the amd64 worker's cross toolchain)")
    with worker(bench.farm, "bench-cross", CROSSFARM_CROSS_ARCHES="arm64"):
        bench.phase(BuildMode.CROSS, names, with_tests=False)
    heading("emulated (an arm64 builder under QEMU on the amd64 worker)")
    with worker(bench.farm, "bench-emu", CROSSFARM_EMULATE_ARCHES="arm64",
                CROSSFARM_EMULATION_IMAGES=json.dumps({"arm64": ARM64_BUILDER_IMAGE})):
        bench.phase(BuildMode.EMULATED, names, with_tests=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(bench: Bench, host: dict[str, float], started: float, load: str) -> None:
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {ARM}, profile "
          f"{bench.profile}; {(time.monotonic() - started) / 60:.1f} min in all; load average "
          f"at the start {load}, at the end {loadavg()} on {os.cpu_count()} cpus. Seconds "
          "from submit to the job's end; 'native' is an arm64 worker and builder under "
          "QEMU here (a lower bound of real ARM hardware)")
    for line in build_table(bench.profile, host, bench.builds, bench.bad):
        print(line)
    native, emulated = bench.tests.get(BuildMode.NATIVE), bench.tests.get(BuildMode.EMULATED)
    if native is None or emulated is None:
        return
    n = seconds(native, ("test", "native") in bench.bad)
    e = seconds(emulated, ("test", "emulated") in bench.bad)
    want = "{} passed, {} failed, {} ignored".format(*TESTED_COUNTS)
    print(f"cargo test {TESTED} ({want} expected): native {fmt(n, 0)} s, emulated {fmt(e, 0)} s, "
          f"native/emulated {ratio(n, e)}")
    for (what, mode) in sorted(bench.bad):
        print(f"  no figure for {what} {mode}: see its line above")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="dev", help="cargo profile (default dev)")
    parser.add_argument("--projects", default="hello-c,ripgrep",
                        help="crates built for aarch64: hello-c, ripgrep (crates.io)")
    args = parser.parse_args()
    names = args.projects.split(",")
    unknown = set(names) - {"hello-c", "ripgrep"}
    if unknown:
        parser.error(f"unknown projects {sorted(unknown)}: hello-c, ripgrep")
    # stopped (a `timeout`, a kill), the farm it started and its volume still go
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started, load = time.monotonic(), loadavg()
    with tempfile.TemporaryDirectory(prefix="crossfarm-arm64-bench-") as tmp:
        work = Path(tmp)
        os.environ["PYTHONPATH"] = str(importable(REPO, work / "path"))
        pristine = crates(work, [*names, TESTED])
        heading("host reference")
        host = host_times({n: pristine[n] for n in names}, args.profile, work)
        (work / "farm").mkdir()
        running = localfarm.Farm(dir=work / "farm")
        subprocess.run(["docker", "volume", "rm", "-f", DEPS_VOLUME], capture_output=True)
        try:
            running.start_redis()
            running.start_s3()
            running.start_controller()
            with FarmClient(running.controller_url) as client:
                sources = {n: send(client, scan(tree)).status.digest
                           for n, tree in pristine.items()}
                bench = Bench(running, client, sources, args.profile)
                try:
                    measure(bench, names)
                finally:
                    report(bench, host, started, load)
        finally:
            running.stop()
            subprocess.run(["docker", "volume", "rm", "-f", DEPS_VOLUME], capture_output=True)
            shutil.rmtree(work, ignore_errors=True)  # build containers' files are root's


if __name__ == "__main__":
    main()
