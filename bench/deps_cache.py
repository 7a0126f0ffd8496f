#!/usr/bin/env python3
"""Does fetching dependencies in the worker's own code (checked against Cargo.lock, a
read-only deps volume) slow builds down? Cold release builds of real crates on a farm
of this checkout and on a farm of a baseline commit, in the same run.

For each code version: a farm of its own (Redis, SeaweedFS, controller, one worker on
loopback), its dependency store emptied, then two builds of each crate with the CLI:
the first downloads every dependency, the second finds them stored (both compile
every crate: each job has a fresh target dir). Run by hand, on an idle machine:

    python bench/deps_cache.py [--baseline REV] [--crate hello-c|ripgrep]...

The default baseline is the commit before the worker fetched dependencies itself (the
farm ran `cargo fetch` with the network on, into a shared cargo home). ripgrep 14.1.1
(61 crates in its lock file) is taken from crates.io with the host's cargo.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
X86 = "x86_64-unknown-linux-gnu"
#: The worker's dependency store at each version: a shared cargo home, then the deps volume.
STORES = ("crossfarm-cargo-home", "crossfarm-deps")


def checkout(rev: str, into: Path) -> Path:
    """A worktree of `rev`, and a folder that imports it as `crossfarm.*`."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(into),
                    rev], check=True)
    return importable(into, into.parent / f"{into.name}-path")


def importable(tree: Path, path: Path) -> Path:
    (path / "crossfarm").mkdir(parents=True)
    for part in ("shared", "controller", "worker", "client"):
        (path / "crossfarm" / part).symlink_to(tree / part)
    return path


def ripgrep(into: Path) -> Path:
    """ripgrep 14.1.1's published crate, with its Cargo.lock, from crates.io."""
    shell = into / "fetch-ripgrep"
    (shell / "src").mkdir(parents=True)
    (shell / "Cargo.toml").write_text('[package]\nname = "shell"\nversion = "0.0.0"\n'
                                      'edition = "2021"\n[dependencies]\n'
                                      'ripgrep = "=14.1.1"\n')
    (shell / "src" / "lib.rs").write_text("")
    home = into / "cargo-home"
    subprocess.run(["cargo", "fetch", "-q"], cwd=shell, check=True,
                   env={**os.environ, "CARGO_HOME": str(home)})
    [crate_file] = home.glob("registry/cache/*/ripgrep-14.1.1.crate")
    subprocess.run(["tar", "-xzf", str(crate_file), "-C", str(into)], check=True)
    return into / "ripgrep-14.1.1"


@contextmanager
def ripgrep_farm(prefix: str) -> Iterator[tuple[Any, Path]]:
    """(a farm of this checkout with Redis, SeaweedFS and a controller started, ripgrep
    14.1.1's crate) for the benches that start their own workers on it; stopped after."""
    sys.path.insert(0, str(REPO / "deploy" / "local"))
    import farm as localfarm
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        crate = ripgrep(work)
        os.environ["PYTHONPATH"] = str(importable(REPO, work / "path"))
        (work / "farm").mkdir()
        running = localfarm.Farm(dir=work / "farm")
        try:
            running.start_redis()
            running.start_s3()
            running.start_controller()
            yield running, crate
        finally:
            running.stop()
            shutil.rmtree(work / "farm", ignore_errors=True)


def release_build(farm: Any, crate: Path, said: str, *flags: str
                  ) -> tuple[float, float, str]:
    """(CLI seconds, the job's seconds on its worker, what the CLI's lines matching the
    regex `said` say) of one x86_64 release build of `crate` with the CLI."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "crossfarm.client", "build", "--target", X86,
                           "--release", "--json", *flags], cwd=crate,
                          env=farm.env(),
                          capture_output=True, text=True, check=True)
    wall = time.monotonic() - started
    [job] = json.loads(done.stdout)["build"]["jobs"]
    worker = (datetime.fromisoformat(job["finished_at"])
              - datetime.fromisoformat(job["started_at"])).total_seconds()
    return wall, worker, "; ".join(m.group(0)[:110] for m in re.finditer(said, done.stderr))


def timed_builds(tree: Path, pythonpath: Path, crates: dict[str, Path], work: Path
                 ) -> dict[str, list[float]]:
    """Two cold release builds of each crate on a fresh farm of `tree`'s code."""
    os.environ["PYTHONPATH"] = str(pythonpath)  # the farm's processes and the CLI
    sys.path.insert(0, str(tree / "deploy" / "local"))
    import farm as localfarm  # each version's own launcher
    sys.path.pop(0)
    del sys.modules["farm"]
    for volume in STORES:
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)
    (work / "farm").mkdir(parents=True)
    running = localfarm.Farm(dir=work / "farm")
    times: dict[str, list[float]] = {}
    try:
        running.start_redis()
        running.start_s3()
        running.start_controller()
        running.start_worker("bench-deps", CROSSFARM_CONCURRENCY="1")
        for name, crate in crates.items():
            for _ in range(2):
                copy = work / f"{name}-{len(times.get(name, []))}"
                shutil.copytree(crate, copy)
                started = time.monotonic()
                subprocess.run([sys.executable, "-m", "crossfarm.client", "build", "--target",
                                X86, "--release", "--json"], cwd=copy, env=running.env(),
                               check=True, capture_output=True)
                times.setdefault(name, []).append(time.monotonic() - started)
                print(f"  {name}: {times[name][-1]:.1f} s", flush=True)
    finally:
        running.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="cbcf11f^",
                        help="the commit to compare with (default: before worker/deps.py)")
    parser.add_argument("--crate", action="append", choices=["hello-c", "ripgrep"])
    args = parser.parse_args()
    names = args.crate or ["hello-c", "ripgrep"]
    with tempfile.TemporaryDirectory(prefix="crossfarm-deps-bench-") as tmp:
        work = Path(tmp)
        crates = {"hello-c": REPO / "tests/fixtures/hello-c"}
        if "ripgrep" in names:
            crates["ripgrep"] = ripgrep(work)
        crates = {n: c for n, c in crates.items() if n in names}
        results = {}
        try:
            base = checkout(args.baseline, work / "baseline")
            print(f"baseline {args.baseline}:", flush=True)
            results["baseline"] = timed_builds(work / "baseline", base, crates, work / "b")
            print("this checkout:", flush=True)
            results["current"] = timed_builds(REPO, importable(REPO, work / "current-path"),
                                              crates, work / "c")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(work / "baseline")], capture_output=True)
    print(f"\n{'crate':<10} {'build':<22} {'baseline s':>10} {'this s':>8} {'ratio':>6}")
    for name in crates:
        for i, label in enumerate(("deps downloaded", "deps already stored")):
            old, new = results["baseline"][name][i], results["current"][name][i]
            print(f"{name:<10} {label:<22} {old:>10.1f} {new:>8.1f} {new / old:>6.2f}")


if __name__ == "__main__":
    main()
