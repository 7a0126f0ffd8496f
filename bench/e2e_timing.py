#!/usr/bin/env python3
"""Where the wall time of one farm build goes, per target, against a local cargo build.

Needs a running farm (`make up`). Run by hand:

    python bench/e2e_timing.py [CRATE_DIR] [--target T]...

Prints pack/upload/submit/download times, each job's queue wait and worker steps
(from the worker's own "took" log lines), and the ratio of the farm's wall time to
a plain `cargo build --release` of the same crate on this machine, measured in the
same run (a fresh target dir each time, so both compile every dependency).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send
from crossfarm.shared.wire import BuildRequest, CargoSpec

REPO = Path(__file__).resolve().parents[1]
TOOK = re.compile(r"crossfarm: (.+) took ([0-9.]+) s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("crate", nargs="?", type=Path, default=REPO / "tests/fixtures/hello-c")
    parser.add_argument("--target", action="append", dest="targets")
    args = parser.parse_args()
    targets = args.targets or ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"]
    client = FarmClient(os.environ.get("CROSSFARM_URL", "http://127.0.0.1:8700"))

    with tempfile.TemporaryDirectory() as tmp:
        crate = Path(tmp) / "crate"
        shutil.copytree(args.crate, crate, ignore=shutil.ignore_patterns("target"))
        # a unique comment so the farm cannot reuse an earlier upload
        (crate / "src" / "main.rs").open("a").write(f"\n// bench {time.time_ns()}\n")
        t0 = time.monotonic()
        local = scan(crate)
        t_pack = time.monotonic()
        sent = send(client, local)
        t_upload = time.monotonic()
        build = client.submit(BuildRequest(source=sent.status.digest, targets=targets,
                                           cargo=CargoSpec(profile="release")))
        t_submit = time.monotonic()
        steps: dict[str, dict[str, float]] = {t: {} for t in targets}
        for event in client.events(build.build_id):
            if event.kind == "log" and event.target and event.line:
                match = TOOK.match(event.line)
                if match:
                    steps[event.target][match.group(1)] = float(match.group(2))
        t_done = time.monotonic()
        final = client.build(build.build_id)
        for artifact in client.artifacts(build.build_id):
            client.download(artifact, crate / artifact.path)
        t_download = time.monotonic()

        local_dir = Path(tmp) / "local-target"
        l0 = time.monotonic()
        subprocess.run(["cargo", "build", "--release", "-q", "--target-dir", str(local_dir)],
                       cwd=crate, check=True)
        local_s = time.monotonic() - l0

    print(f"crate {args.crate.name}: {len(local.tree.entries)} files, "
          f"{sent.bytes_sent} bytes sent")
    print(f"scan {t_pack - t0:.2f} s, upload {t_upload - t_pack:.2f} s, "
          f"submit {t_submit - t_upload:.2f} s, all jobs done after {t_done - t_submit:.2f} s, "
          f"download {t_download - t_done:.2f} s")
    for job in final.jobs:
        wait = (job.started_at - job.queued_at).total_seconds() if job.started_at else float("nan")
        run = ((job.finished_at - job.started_at).total_seconds()
               if job.finished_at and job.started_at else float("nan"))
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in steps[job.target].items())
        print(f"  {job.target} [{job.mode}, {job.state}]: queue wait {wait:.2f} s, "
              f"on worker {run:.2f} s ({parts})")
    farm_total = t_download - t0
    print(f"farm wall time {farm_total:.2f} s for {len(targets)} target(s); "
          f"local cargo build --release (host only) {local_s:.2f} s; "
          f"ratio farm/local {farm_total / local_s:.2f}")
    sys.exit(0 if final.state == "succeeded" else 1)


if __name__ == "__main__":
    main()
