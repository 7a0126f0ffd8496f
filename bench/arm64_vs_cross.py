#!/usr/bin/env python3
"""One real crate built for aarch64 twice in one run: natively on a truly-arm64 worker
(its Python and its builder run under QEMU on this x86_64 machine: emulated), and with
the cross toolchain on the amd64 worker. Prints both wall times and their ratio.

Needs `make up`'s farm and the arm64 images (`make images`). Run by hand:

    python bench/arm64_vs_cross.py [CRATE_DIR]

On real ARM hardware the native build would be the fast one; here it shows what
crossfarm saves a user who would otherwise emulate: the ratio emulated / cross.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send
from crossfarm.shared.arch import Placement
from crossfarm.shared.wire import BuildRequest, CargoSpec, JobView

REPO = Path(__file__).resolve().parents[1]
# The local-farm launcher is a script, not a package module: import it from its folder.
sys.path.insert(0, str(REPO / "deploy" / "local"))
import farm as localfarm  # noqa: E402

ARM = "aarch64-unknown-linux-gnu"
# the production arm64 images, as `make images` tags them (Makefile)
ARM64_WORKER_IMAGE = "crossfarm/crossfarm:test-arm64"
ARM64_BUILDER_IMAGE = "crossfarm/builder:1-arm64"



def timed_build(client: FarmClient, source: str, placement: Placement) -> tuple[float, JobView]:
    started = time.monotonic()
    build = client.submit(BuildRequest(source=source, targets=[ARM],
                                       cargo=CargoSpec(profile="release"), placement=placement,
                                       cache=False))  # each run is timed on a worker
    for _ in client.events(build.build_id):
        pass
    job = client.build(build.build_id).jobs[0]
    return time.monotonic() - started, job


def main() -> None:
    crate = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests/fixtures/hello-c"
    farm = localfarm.Farm(dir=(REPO / ".crossfarm").resolve(), redis_port=6379, s3_port=8333,
                          controller_port=8700)
    with tempfile.TemporaryDirectory() as tmp, FarmClient(farm.controller_url) as client:
        copy = Path(tmp) / "crate"
        shutil.copytree(crate, copy, ignore=shutil.ignore_patterns("target"))
        source = send(client, scan(copy)).status.digest
        container = farm.start_container_worker("bench-arm64", ARM64_WORKER_IMAGE,
                                                ARM64_BUILDER_IMAGE, REPO,
                                                CROSSFARM_HEARTBEAT_S="2")
        try:
            native_s, native = timed_build(client, source, Placement.NATIVE)
        finally:
            farm.stop_container(container, timeout_s=5)
        time.sleep(3)  # let the fleet see it gone, so cross-ok picks the cross toolchain
        cross_s, cross = timed_build(client, source, Placement.CROSS_OK)
    for seconds, job in ((native_s, native), (cross_s, cross)):
        print(f"{job.target}: {job.state} on {job.worker} ({job.mode}) in {seconds:.1f} s")
    print(f"native on an emulated arm64 host / cross toolchain on amd64: {native_s / cross_s:.1f}x")


if __name__ == "__main__":
    main()
