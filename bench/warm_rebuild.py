#!/usr/bin/env python3
"""How much does a warm target dir save? Release builds of ripgrep 14.1.1 (61 crates)
on a farm of this checkout with one worker that keeps warm dirs: the first build (cold:
its dir is new), an unchanged rebuild, and a one-line change in ripgrep's own main.rs;
then the same one-line change on a worker with warm dirs off, for comparison. Each row
gives the CLI's wall time and the job's seconds on the worker, and the worker's line
saying how many of cargo's units were fresh. Run by hand, under the integration lock:

    flock /tmp/crossfarm-integration.lock python bench/warm_rebuild.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "deploy" / "local"))
import farm as localfarm  # noqa: E402
from deps_cache import release_build, ripgrep_farm  # noqa: E402

WORKER = {"CROSSFARM_JOB_DISK_BYTES": "0", "CROSSFARM_CONCURRENCY": "1"}


def build(farm: localfarm.Farm, crate: Path) -> tuple[float, float, str]:
    """(CLI seconds, worker seconds, the warm/cold line) of one release build."""
    wall, worker, said = release_build(farm, crate, r"crossfarm: (warm|cold) target dir[^\n]*")
    return wall, worker, said or "?"


def one_line_change(crate: Path, n: int) -> None:
    main = crate / "crates" / "core" / "main.rs"
    main.write_text(main.read_text() + f"\n// one-line change {n}\n")


def main() -> None:
    rows = []
    try:
        with ripgrep_farm("crossfarm-warm-bench-") as (running, crate):
            running.start_worker("bench-warm", CROSSFARM_WARM_BYTES=str(20 * 1024**3),
                                 **WORKER)
            rows.append(("first build (new warm dir)", *build(running, crate)))
            rows.append(("unchanged rebuild", *build(running, crate)))
            one_line_change(crate, 1)
            rows.append(("one-line change, warm", *build(running, crate)))
            running.stop_process("bench-warm")
            running.start_worker("bench-cold", **WORKER)
            one_line_change(crate, 2)
            rows.append(("one-line change, warm dirs off", *build(running, crate)))
            running.stop_process("bench-cold")
    finally:
        for volume in subprocess.run(
                ["docker", "volume", "ls", "-q", "--filter", "label=io.crossfarm.warm"],
                capture_output=True, text=True).stdout.split():
            subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)
    print(f"\n{'ripgrep 14.1.1, release':<32} {'CLI s':>7} {'worker s':>9}  worker says")
    for label, wall, worker, said in rows:
        print(f"{label:<32} {wall:>7.1f} {worker:>9.1f}  {said}")


if __name__ == "__main__":
    main()
