#!/usr/bin/env python3
"""Soak: N builds while workers are killed (-9) at random, on a farm of its own.

Starts Redis, SeaweedFS, a controller and two amd64 workers on free loopback ports in a
temporary directory (the real parts, as the tests do), submits N builds of a small
crate, kills one worker at random every few seconds and restarts it, then waits for
every build to end. Prints builds accepted / succeeded / failed / lost / duplicated
and orphan containers. Run by hand (not in CI):

    python bench/soak.py [--builds 20] [--kill-every 15] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send
from crossfarm.shared.storage import S3Store, StorageSettings

REPO = Path(__file__).resolve().parents[1]
# The local-farm launcher is a script, not a package module: import it from its folder.
sys.path.insert(0, str(REPO / "deploy" / "local"))
import farm as localfarm  # noqa: E402

X86 = "x86_64-unknown-linux-gnu"
WORKERS = ("soak-a", "soak-b")



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--builds", type=int, default=20)
    parser.add_argument("--kill-every", type=float, default=15)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=1800)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        farm = localfarm.Farm(dir=Path(tmp))
        fast = {"CROSSFARM_HEARTBEAT_S": "1"}
        try:
            farm.start_redis()
            farm.start_s3()
            farm.start_controller(CROSSFARM_LOST_AFTER_S="6", CROSSFARM_LEASE_GRACE_S="5",
                                  CROSSFARM_PLACER_INTERVAL_S="0.5",
                                  CROSSFARM_MAX_ATTEMPTS="5")
            for name in WORKERS:
                farm.start_worker(name, **fast)
            report = _soak(farm, rng, args, fast)
        finally:
            farm.stop()
    for line in report:
        print(line)


def _soak(farm, rng: random.Random, args: argparse.Namespace, fast: dict[str, str]
          ) -> list[str]:
    crate = Path(farm.dir) / "crate"
    shutil.copytree(REPO / "tests/fixtures/hello-c", crate)
    with FarmClient(farm.controller_url) as client:
        source = send(client, scan(crate)).status.digest
    api = httpx.Client(base_url=farm.controller_url, timeout=30)
    builds = [api.post("/v1/builds", json={"source": source, "targets": [X86]}).json()["build_id"]
              for _ in range(args.builds)]
    kills = 0
    deadline = time.monotonic() + args.deadline
    next_kill = time.monotonic() + args.kill_every
    while time.monotonic() < deadline:
        states = [api.get(f"/v1/builds/{b}").json()["state"] for b in builds]
        if all(s in ("succeeded", "failed", "cancelled") for s in states):
            break
        if time.monotonic() >= next_kill:
            victim = rng.choice(WORKERS)
            os.killpg(farm.procs[victim].pid, signal.SIGKILL)
            farm.procs.pop(victim).wait()
            kills += 1
            farm.start_worker(victim, **fast)
            next_kill = time.monotonic() + args.kill_every
        time.sleep(1)
    time.sleep(5)  # one more heartbeat: the workers reap what the killed ones left
    views = [api.get(f"/v1/builds/{b}").json() for b in builds]
    store = S3Store(StorageSettings(endpoint_url=farm.s3_url, bucket="crossfarm",
                                    access_key="crossfarm", secret_key="crossfarm-local-secret"))
    duplicated = sum(1 for b in builds if len([k for k in store.list_keys(f"builds/{b}/")
                                                  if k.endswith("manifest.json")]) > 1)
    orphans = subprocess.run(["docker", "ps", "-aq", "--filter", "label=io.crossfarm=1"],
                             capture_output=True, text=True).stdout.split()
    count = {s: sum(1 for v in views if v["state"] == s)
             for s in ("succeeded", "failed", "queued", "running")}
    attempts = [v["jobs"][0]["attempt"] for v in views]
    return [
        f"builds accepted {len(builds)}, worker kills {kills}",
        f"succeeded {count['succeeded']}, failed {count['failed']}, "
        f"lost (not finished by the deadline) {count['queued'] + count['running']}",
        f"duplicated (more than one manifest) {duplicated}",
        f"orphan containers {len(orphans)}",
        f"attempts: max {max(attempts)}, re-runs {sum(a - 1 for a in attempts)}",
        *(f"  {v['build_id']} failed: {v['jobs'][0]['reason']}" for v in views
          if v["state"] == "failed"),
    ]


if __name__ == "__main__":
    main()
