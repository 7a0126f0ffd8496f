#!/usr/bin/env python3
"""How much does the compile cache save a new worker? Release builds of ripgrep 14.1.1
(61 crates) on a farm of this checkout: the first build on a worker with the compile
cache on (the store holds nothing yet), the same crate on a *second, new* worker with
the cache on (its scratch dir and target dir fresh: only the store is warm, as for a
scaled-out worker), and the same crate on a third new worker with the cache off. Each
row gives the CLI's wall time, the job's seconds on the worker, and what the log says
of the cache. The result cache is bypassed (--no-cache). Run by hand, under the
integration lock:

    flock /tmp/crossfarm-integration.lock python bench/compile_cache.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "deploy" / "local"))
import farm as localfarm  # noqa: E402
from deps_cache import release_build, ripgrep_farm  # noqa: E402

WORKER = {"CROSSFARM_CONCURRENCY": "1"}
CACHE = {"CROSSFARM_COMPILE_CACHE_BYTES": str(2 * 1024**3)}


def build(farm: localfarm.Farm, crate: Path) -> tuple[float, float, str]:
    """(CLI seconds, worker seconds, the compile cache's lines) of one release build."""
    wall, worker, said = release_build(farm, crate, r"(?<=crossfarm: compile cache: )[^\n]{,60}",
                                       "--no-cache")
    return wall, worker, said or "off"


def main() -> None:
    rows = []
    with ripgrep_farm("crossfarm-sccache-bench-") as (running, crate):
        for name, label, extra in (
                ("bench-cache-1", "first worker, store empty", CACHE),
                ("bench-cache-2", "new worker, store warm", CACHE),
                ("bench-nocache", "new worker, cache off", {})):
            running.start_worker(name, **WORKER, **extra)
            rows.append((label, *build(running, crate)))
            running.stop_process(name)
    load = os.getloadavg()
    print(f"\n{'ripgrep 14.1.1, release':<28} {'CLI s':>7} {'worker s':>9}  compile cache")
    for label, wall, worker, said in rows:
        print(f"{label:<28} {wall:>7.1f} {worker:>9.1f}  {said}")
    print(f"new worker with the store warm / cache off (worker s): "
          f"{rows[1][2] / rows[2][2]:.2f}; load average {load[0]:.2f} {load[1]:.2f}")


if __name__ == "__main__":
    main()
