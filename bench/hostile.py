#!/usr/bin/env python3
"""Hostile crates against one worker with small budgets: per bomb, how long until the
build ends, the worker's peak RSS meanwhile against the same worker idle, and whether
the worker is healthy after.

Starts a farm of its own (Redis, SeaweedFS, the controller, one worker on loopback),
builds tests/fixtures/hello-c as the baseline, then each bomb of
tests/integration/bombs.py, each followed by a normal hello-c build on the same worker.
The worker's RSS is its process tree's (main process and pool children, from /proc),
sampled every 100 ms. Run by hand on an otherwise idle machine, under the lock every
farm run on this machine takes (two farms on one Docker engine reap each other's
containers):

    flock /tmp/crossfarm-integration.lock python3 bench/hostile.py [--only NAME] [--skip NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send
from crossfarm.shared import keys
from crossfarm.shared.errors import StorageError
from crossfarm.shared.storage import S3Store, StorageSettings
from crossfarm.shared.wire import BuildRequest, JobView

REPO = Path(__file__).resolve().parents[1]
# The local-farm launcher is a script and the bombs a test module: import them from
# their folders.
sys.path.insert(0, str(REPO / "deploy" / "local"))
sys.path.insert(0, str(REPO / "tests" / "integration"))
import bombs  # noqa: E402
import farm as localfarm  # noqa: E402

X86 = "x86_64-unknown-linux-gnu"
WORKER = "bench-hostile"
HELLO = REPO / "tests" / "fixtures" / "hello-c"
ARTIFACT_COUNT = 3
#: The worker's budgets: those of test_hostile_limits.py, plus memory and pids small
#: enough for the memory and fork bombs to meet them quickly.
BUDGETS = {
    "CROSSFARM_HEARTBEAT_S": "1", "CROSSFARM_CONCURRENCY": "1", "CROSSFARM_BUILD_CPUS": "1",
    "CROSSFARM_JOB_DISK_BYTES": str(256 * 1024**2),
    "CROSSFARM_LOG_MAX_BYTES": str(1024**2), "CROSSFARM_LOG_LINE_MAX_BYTES": "4096",
    "CROSSFARM_ARTIFACT_MAX_COUNT": str(ARTIFACT_COUNT),
    "CROSSFARM_ARTIFACT_MAX_BYTES": str(64 * 1024**2),
    "CROSSFARM_BUILD_TMPFS_BYTES": str(16 * 1024**2),
    "CROSSFARM_BUILD_MEMORY_BYTES": str(512 * 1024**2), "CROSSFARM_BUILD_PIDS": "256",
}
#: The job timeout of every build but the CPU spin's.
TIMEOUT_S = 300
#: How long past its job timeout the bench waits for a build before cancelling it.
GRACE_S = 120
TOOK = re.compile(r"crossfarm: build step took ([0-9.]+) s")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Bomb:
    """A crate to build: the fixture's build script with `script` at its end."""

    name: str
    script: str
    timeout_s: int = TIMEOUT_S


BASELINE = Bomb("hello-c", "")
BOMBS = [
    Bomb("disk", bombs.DISK_BOMB),
    Bomb("log-flood", bombs.LOG_FLOOD),
    Bomb("huge-line", bombs.HUGE_LINE),
    Bomb("artifact-count", bombs.too_many_artifacts(ARTIFACT_COUNT + 2)),
    Bomb("huge-artifact", bombs.HUGE_ARTIFACT),
    Bomb("memory", bombs.MEMORY_BOMB),
    Bomb("fork", bombs.FORK_BOMB),
    Bomb("cpu-spin", bombs.CPU_SPIN, timeout_s=20),
]


@dataclass
class Row:
    """What one build measured."""

    bomb: str
    outcome: str
    submit_to_end_s: float | None
    build_step_s: float | None
    peak_rss: int
    healthy: str


def tree_rss(root: int) -> int:
    """The resident bytes of `root` and every process under it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(entry.path, "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return total


class RssSampler(threading.Thread):
    """Samples a process tree's RSS every 100 ms; `peak()` is the highest since `reset()`."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self._root = root
        self._peak = 0
        self._lock = threading.Lock()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.1):
            rss = tree_rss(self._root)
            with self._lock:
                self._peak = max(self._peak, rss)

    def reset(self) -> None:
        with self._lock:
            self._peak = tree_rss(self._root)

    def peak(self) -> int:
        with self._lock:
            return self._peak

    def stop(self) -> None:
        self._done.set()


class Bench:
    """The farm under test, its one worker, and the build in flight (to cancel on exit)."""

    def __init__(self, running: localfarm.Farm, client: FarmClient, work: Path) -> None:
        self.farm = running
        self.client = client
        self.work = work
        self.in_flight: str | None = None
        self.store = S3Store(StorageSettings(
            endpoint_url=running.s3_url, bucket=localfarm.BUCKET,
            access_key=localfarm.ACCESS_KEY, secret_key=localfarm.SECRET_KEY))

    def crate(self, bomb: Bomb) -> Path:
        """A fresh copy of hello-c, its build script ending with the bomb."""
        crate = self.work / f"{bomb.name}-{time.monotonic_ns()}"
        shutil.copytree(HELLO, crate)
        if bomb.script:
            (crate / "build.rs").write_text(bombs.BUILD_RS.format(bomb=bomb.script))
        return crate

    def build(self, bomb: Bomb) -> tuple[str, JobView, float]:
        """Build to its end (cancelled past its timeout and the grace): the build's id,
        its job and the seconds from submit to the end as the client saw it."""
        source = send(self.client, scan(self.crate(bomb))).status.digest
        started = time.monotonic()
        build_id = self.client.submit(BuildRequest(
            source=source, targets=[X86], timeout_s=bomb.timeout_s)).build_id
        self.in_flight = build_id
        deadline = started + bomb.timeout_s + GRACE_S
        while (job := self.client.build(build_id).jobs[0]).state not in (
                "succeeded", "failed", "cancelled"):
            if time.monotonic() > deadline:
                self.client.cancel(build_id)
                deadline += 60
            time.sleep(0.1)
        self.in_flight = None
        return build_id, job, time.monotonic() - started

    def build_step_s(self, build_id: str, job: JobView) -> float | None:
        """What the worker logged for the build step, if it logged it (only a step that
        returns does)."""
        try:
            log = self.store.get_bytes(keys.log_key(build_id, X86, job.attempt))
        except StorageError:
            return None
        took = TOOK.search(log.decode(errors="replace"))
        return float(took.group(1)) if took else None

    def healthy_after(self, worker: subprocess.Popen) -> str:
        """'yes' if the worker lives, heartbeats and builds hello-c; else what failed."""
        if worker.poll() is not None:
            return f"no: worker exited with {worker.returncode}"
        since = datetime.now(UTC)
        deadline = time.monotonic() + 30
        while not any(w.name == WORKER and w.state == "online" and w.last_seen > since
                      for w in self.client.workers().workers):
            if time.monotonic() > deadline:
                return "no: no heartbeat within 30 s"
            time.sleep(0.2)
        _, job, _ = self.build(BASELINE)
        return "yes" if job.state == "succeeded" else f"no: next build {job.reason}"

    def measure(self, bomb: Bomb, worker: subprocess.Popen, rss: RssSampler) -> Row:
        rss.reset()
        build_id, job, seen_s = self.build(bomb)
        peak = rss.peak()
        server_s = ((job.finished_at - job.queued_at).total_seconds()
                    if job.finished_at else seen_s)
        outcome = f"{job.state}: {job.reason}" if job.reason else job.state
        return Row(bomb.name, outcome[:60], server_s, self.build_step_s(build_id, job), peak,
                   self.healthy_after(worker))


def _mib(n: int) -> str:
    return f"{n / 1024**2:.0f}"


def table(rows: list[Row], idle: int) -> str:
    head = (f"{'bomb':<15} {'outcome / reason':<60} {'submit→end s':>12} {'build step s':>12} "
            f"{'peak RSS MiB':>12} {'vs idle':>7}  healthy after")
    lines = [f"worker idle RSS: {_mib(idle)} MiB (main process + pool children)", head,
             "-" * len(head)]
    for r in rows:
        step = f"{r.build_step_s:.2f}" if r.build_step_s is not None else "-"
        total = f"{r.submit_to_end_s:.2f}" if r.submit_to_end_s is not None else "-"
        lines.append(f"{r.bomb:<15} {r.outcome:<60} {total:>12} {step:>12} "
                     f"{_mib(r.peak_rss):>12} {r.peak_rss / idle:>6.2f}x  {r.healthy}")
    return "\n".join(lines)


def idle_rss(rss: RssSampler, seconds: float = 3) -> int:
    rss.reset()
    time.sleep(seconds)
    return rss.peak()


def leftovers(farm_dir: Path) -> None:
    """Remove whatever of this bench's worker the engine or the kernel still holds: its
    labelled containers and volumes, loop devices backed by its disk images."""
    selector = [arg for label in keys.worker_selector(WORKER) for arg in ("--filter",
                                                                          f"label={label}")]
    for kind in (["ps", "-aq"], ["volume", "ls", "-q"]):
        ids = subprocess.run(["docker", *kind, *selector], capture_output=True,
                             text=True).stdout.split()
        if ids:
            remove = ["rm", "-f"] if kind[0] == "ps" else ["volume", "rm", "-f"]
            subprocess.run(["docker", *remove, *ids], capture_output=True)
    listed = subprocess.run(["losetup", "--list", "--json"], capture_output=True, text=True)
    for device in json.loads(listed.stdout or "{}").get("loopdevices", []):
        if str(farm_dir) in (device.get("back-file") or ""):
            subprocess.run(["losetup", "-d", device["name"]], capture_output=True)


@contextlib.contextmanager
def farm_of_one_worker(work: Path) -> Iterator[tuple[localfarm.Farm, subprocess.Popen]]:
    running = localfarm.Farm(dir=work / "farm")
    running.dir.mkdir()
    try:
        running.start_redis()
        running.start_s3()
        running.start_controller()
        yield running, running.start_worker(WORKER, **BUDGETS)
    finally:
        running.stop()
        leftovers(running.dir)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the same way out as Ctrl-C: every finally runs


def main() -> int:
    parser = argparse.ArgumentParser(description="Hostile crates against one worker with "
                                     "small budgets: time to failure, peak RSS, health.")
    names = [b.name for b in BOMBS]
    parser.add_argument("--only", action="append", choices=names, metavar="NAME",
                        help=f"only this bomb (repeatable): {', '.join(names)}")
    parser.add_argument("--skip", action="append", choices=names, metavar="NAME",
                        help="leave this bomb out (repeatable)")
    args = parser.parse_args()
    chosen = [b for b in BOMBS if (not args.only or b.name in args.only)
              and b.name not in (args.skip or [])]
    signal.signal(signal.SIGTERM, _terminated)

    rows: list[Row] = []
    idle = 0
    with tempfile.TemporaryDirectory(prefix="crossfarm-hostile-") as tmp, \
            farm_of_one_worker(Path(tmp)) as (running, worker), \
            FarmClient(running.controller_url) as client:
        bench = Bench(running, client, Path(tmp))
        rss = RssSampler(worker.pid)
        rss.start()
        try:
            idle = idle_rss(rss)
            print(f"worker idle: {_mib(idle)} MiB", flush=True)
            for bomb in [BASELINE, *chosen]:
                rows.append(bench.measure(bomb, worker, rss))
                print(f"{bomb.name}: {rows[-1].outcome}", flush=True)
        except KeyboardInterrupt:
            print("interrupted: stopping the farm", flush=True)
            if bench.in_flight:
                with contextlib.suppress(Exception):
                    client.cancel(bench.in_flight)
            return 130
        finally:
            rss.stop()
            if rows:
                print(table(rows, idle), flush=True)
    return 0 if all(r.healthy == "yes" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
