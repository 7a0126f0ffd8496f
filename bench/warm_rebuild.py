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

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "deploy" / "local"))
import farm as localfarm  # noqa: E402
from deps_cache import importable, ripgrep  # noqa: E402

X86 = "x86_64-unknown-linux-gnu"
WORKER = {"CROSSFARM_JOB_DISK_BYTES": "0", "CROSSFARM_CONCURRENCY": "1"}


def build(farm: localfarm.Farm, crate: Path) -> tuple[float, float, str]:
    """(CLI seconds, worker seconds, the warm/cold line) of one release build."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "crossfarm.client", "build", "--target", X86,
                           "--release", "--json"], cwd=crate, env=farm.env(),
                          capture_output=True, text=True, check=True)
    wall = time.monotonic() - started
    [job] = json.loads(done.stdout)["build"]["jobs"]
    worker = (datetime.fromisoformat(job["finished_at"])
              - datetime.fromisoformat(job["started_at"])).total_seconds()
    said = re.search(r"crossfarm: (warm|cold) target dir[^\n]*", done.stderr)
    return wall, worker, said.group(0)[:110] if said else "?"


def one_line_change(crate: Path, n: int) -> None:
    main = crate / "crates" / "core" / "main.rs"
    main.write_text(main.read_text() + f"\n// one-line change {n}\n")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="crossfarm-warm-bench-") as tmp:
        work = Path(tmp)
        crate = ripgrep(work)
        os.environ["PYTHONPATH"] = str(importable(REPO, work / "path"))
        (work / "farm").mkdir()
        running = localfarm.Farm(dir=work / "farm")
        rows = []
        try:
            running.start_redis()
            running.start_s3()
            running.start_controller()
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
            running.stop()
            for volume in subprocess.run(
                    ["docker", "volume", "ls", "-q", "--filter", "label=io.crossfarm.warm"],
                    capture_output=True, text=True).stdout.split():
                subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)
            shutil.rmtree(work / "farm", ignore_errors=True)
    print(f"\n{'ripgrep 14.1.1, release':<32} {'CLI s':>7} {'worker s':>9}  worker says")
    for label, wall, worker, said in rows:
        print(f"{label:<32} {wall:>7.1f} {worker:>9.1f}  {said}")


if __name__ == "__main__":
    main()
