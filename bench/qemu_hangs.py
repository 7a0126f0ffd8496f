#!/usr/bin/env python3
"""How often an emulated cargo build hangs under qemu-user, and whether the worker's stall
watchdog (worker/stall.py) ends each hang: emulated builds of a generated, fork-heavy
workspace (N members, each with a build script) in the arm64 builder, each run through
the worker's own Docker adapter, Container.run, with a stall limit and a time limit.

No farm: one container at a time on the local engine (network off, the build user, a
read-only root), so no lock is needed; it loads both cores for minutes, so say the load
beside its figures. Per run: seconds, and how it ended (exit code, stalled with the CPU
time it used while quiet, or timed out). Needs `make images` (crossfarm/builder:1-arm64)
and binfmt for aarch64 (deploy/images/binfmt.sh):

    python3 bench/qemu_hangs.py [--runs 6] [--stall 30] [--limit 400] [--members 16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from crossfarm.shared.errors import BuildStalled, BuildTimeout
from crossfarm.worker.container import Docker, Step

IMAGE = "crossfarm/builder:1-arm64"


def workspace_script(members: int) -> str:
    """A shell script that writes the workspace under /tmp/w and builds it, -j2, offline:
    cargo forks a build script and two rustc per member."""
    names = ",".join(f'\\"c{i}\\"' for i in range(members))
    lines = ["set -e", "mkdir -p /tmp/w && cd /tmp/w",
             f"printf '[workspace]\\nresolver = \"2\"\\nmembers = [%s]\\n' \"{names}\""
             " > Cargo.toml"]
    for i in range(members):
        lines += [
            f"mkdir -p c{i}/src",
            f"printf '[package]\\nname = \"c{i}\"\\nversion = \"0.1.0\"\\nedition = \"2021\"\\n'"
            f" > c{i}/Cargo.toml",
            f"printf 'fn main() {{ println!(\"cargo:rerun-if-changed=build.rs\"); }}\\n'"
            f" > c{i}/build.rs",
            f"printf 'pub fn f{i}() -> u32 {{ {i} }}\\n' > c{i}/src/lib.rs",
        ]
    return "\n".join([*lines, "cargo build -j2 --offline 2>&1"])


def one_run(docker: Docker, step: Step, limit_s: float, stall_s: float) -> str:
    """How one build ended: its exit code, stalled (and after which line), or timed out."""
    lines: list[str] = []
    try:
        with docker.container(step) as container:
            result = container.run(lambda _s, line: lines.append(line),
                                   time.monotonic() + limit_s, lambda: None, stall_s=stall_s)
    except BuildStalled as exc:
        return (f"stalled: {exc.cpu_s:.2f} s of CPU time in {exc.quiet_s:.1f} s after "
                f"{lines[-1].strip() if lines else 'no output'!r}")
    except BuildTimeout:
        return "timed out"
    return f"exit {result.exit_code}"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--stall", type=float, default=30, help="stall limit, seconds")
    parser.add_argument("--limit", type=float, default=400, help="time limit, seconds")
    parser.add_argument("--members", type=int, default=16)
    args = parser.parse_args()
    step = Step(image=IMAGE, command=["sh", "-c", workspace_script(args.members)],
                workdir="/tmp", user="10001:10001", env={"CARGO_HOME": "/tmp/cargo-home"},
                network=False, volumes={}, cpus=2.0,
                labels={"io.crossfarm.worker": "bench-qemu-hangs"})
    docker = Docker()
    print(f"{args.runs} emulated builds of a {args.members}-member workspace, stall limit "
          f"{args.stall:g} s, time limit {args.limit:g} s; load average {loadavg()}",
          flush=True)
    ended: dict[str, int] = {}
    try:
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            outcome = one_run(docker, step, args.limit, args.stall)
            kind = outcome.split(":")[0]
            ended[kind] = ended.get(kind, 0) + 1
            print(f"run {run}: {time.monotonic() - started:.0f} s, {outcome} "
                  f"(load average {loadavg()})", flush=True)
    finally:
        docker.close()
    print("ended: " + ", ".join(f"{kind} {count}" for kind, count in sorted(ended.items())))


if __name__ == "__main__":
    main()
