#!/usr/bin/env python3
"""The controller at depth: latencies, CPU, memory and Redis bytes with thousands of
builds queued and a hundred workers heartbeating (issue 16's table and goals).

Starts its own farm with the project's launcher (deploy/local/farm.py): Redis,
SeaweedFS and the controller on its defaults, and no worker, so every build waits.
One tiny source tree is uploaded once; every build is an aarch64 build of it with
placement `native`. Fake workers (amd64, so they take none of it) heartbeat through
the real endpoint all along. Run by hand, under the integration lock:

    flock /tmp/crossfarm-integration.lock python3 bench/scale.py [--depths 0,1000,3000]

At each depth: submit p50/p99 (sequential), `GET /v1/builds/{id}` p50/p99 over 8
concurrent connections, `GET /v1/workers` p50/p99, the first page of `GET /v1/builds`,
heartbeat p50/p99 over 15 s when nothing else is asked, the controller's CPU over 10 s
with no requests at all (the heartbeats paused),
its RSS, and Redis bytes per queued build, split into the builds' event streams, the
broker's messages and the other per-job keys.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send
from crossfarm.shared.wire import WorkerHeartbeat

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy" / "local"))
import farm as localfarm

ARM = "aarch64-unknown-linux-gnu"
X86 = "x86_64-unknown-linux-gnu"
#: the issue's goals, checked at the deepest depth measured (the list page at every depth)
GOAL_CPU_PCT = 5.0
GOAL_HEARTBEAT_P99_MS = 50.0
GOAL_SUBMIT_P99_RATIO = 1.2
GOAL_LIST_P50_MS = 50.0
GOAL_REDIS_BYTES = 2048


def _ms(samples: list[float], q: float) -> float:
    """The q-quantile of durations in seconds, in milliseconds."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    depth: int
    submit: list[float] = field(default_factory=list)
    get_build: list[float] = field(default_factory=list)
    workers: list[float] = field(default_factory=list)
    list_page: list[float] = field(default_factory=list)
    heartbeat: list[float] = field(default_factory=list)
    cpu_pct: float = 0.0
    rss_mb: float = 0.0
    #: Redis bytes per queued build: used_memory's growth, then key by key
    redis_per_build: float = 0.0
    streams_per_build: float = 0.0
    broker_per_build: float = 0.0
    job_keys_per_build: float = 0.0
    streams: int = 0


class Beaters:
    """Fake workers heartbeating through the real endpoint, each every `interval_s`;
    `paused()` stops them for a quiet window, `take()` hands over the latencies seen."""

    def __init__(self, url: str, count: int, interval_s: float) -> None:
        self._http = httpx.Client(base_url=url, timeout=60,
                                  limits=httpx.Limits(max_connections=count))
        self._count, self._interval = count, interval_s
        self._stop = threading.Event()
        self._go = threading.Event()
        self._go.set()
        self._lock = threading.Lock()
        self._latencies: list[float] = []
        #: heartbeats the controller refused or dropped (connection reset under load)
        self.failures: list[str] = []
        self._threads: list[threading.Thread] = []

    def _beat(self, index: int) -> None:
        name = f"fake-{index:03d}"
        info = WorkerHeartbeat(
            hostname=name, arch="amd64", queues={"crossfarm.builds.amd64": "native"},
            cpus=4, memory_bytes=8 * 1024**3, builder_image="crossfarm/builder:1",
            targets=[X86], version="bench", concurrency=1, interval_s=self._interval,
        ).model_dump_json()
        fresh = True
        # Spread the workers over the interval, as real ones drift apart.
        self._stop.wait(self._interval * index / self._count)
        while not self._stop.is_set():
            started = time.monotonic()
            if not self._go.is_set():
                # Paused: skip this beat but keep to the schedule, as resuming all at
                # once would bunch a hundred heartbeats into one burst.
                self._stop.wait(self._interval)
                continue
            try:
                response = self._http.post(f"/v1/workers/{name}/heartbeat", content=info,
                                           params={"fresh_start": str(fresh).lower()},
                                           headers={"Content-Type": "application/json"})
                response.raise_for_status()
            except httpx.HTTPError as exc:  # a real worker retries next beat too
                with self._lock:
                    self.failures.append(f"{name}: {exc}")
            else:
                fresh = False
                with self._lock:
                    self._latencies.append(time.monotonic() - started)
            took = time.monotonic() - started
            self._stop.wait(max(0.0, self._interval - took))

    def start(self) -> None:
        for index in range(self._count):
            thread = threading.Thread(target=self._beat, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def take(self) -> list[float]:
        with self._lock:
            taken, self._latencies = self._latencies, []
        return taken

    @contextmanager
    def paused(self) -> Iterator[None]:
        self._go.clear()
        time.sleep(1)  # let the beats in flight land
        try:
            yield
        finally:
            self._go.set()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=70)
        self._http.close()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _timed(call: Callable[[], httpx.Response]) -> float:
    started = time.monotonic()
    response = call()
    took = time.monotonic() - started
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.method} {response.request.url}: "
                           f"HTTP {response.status_code} {response.text[:300]}")
    return took


#: Sums MEMORY USAGE by kind of key, inside Redis (one round trip whatever the depth):
#: the builds' event streams and their byte counters, the broker's lists, the per-job
#: keys (attempt, cancel); and counts the streams.
_BREAKDOWN = """
local cursor, sums = '0', {0, 0, 0, 0}
repeat
  local answer = redis.call('SCAN', cursor, 'COUNT', 1000)
  cursor = answer[1]
  for _, key in ipairs(answer[2]) do
    local size = redis.call('MEMORY', 'USAGE', key, 'SAMPLES', 0) or 0
    if string.sub(key, 1, 16) == 'crossfarm:build:' then
      sums[1] = sums[1] + size
      if string.sub(key, -7) == ':events' then sums[4] = sums[4] + 1 end
    elseif string.sub(key, 1, 14) == 'crossfarm:job:' then
      sums[3] = sums[3] + size
    elseif string.sub(key, 1, 17) == 'crossfarm.builds.' or string.sub(key, 1, 7) == 'unacked' then
      sums[2] = sums[2] + size
    end
  end
until cursor == '0'
return sums
"""


class RedisProbe:
    """Asks the farm's Redis through redis-cli (the bench keeps the redis library to
    shared/events.py, like everything else)."""

    def __init__(self, host: str, port: int) -> None:
        self._argv = ["redis-cli", "-h", host, "-p", str(port)]

    def _ask(self, *command: str) -> str:
        return subprocess.run([*self._argv, *command], capture_output=True, text=True,
                              check=True).stdout

    def used_memory(self) -> int:
        for line in self._ask("INFO", "memory").splitlines():
            if line.startswith("used_memory:"):
                return int(line.split(":")[1])
        raise RuntimeError("INFO memory has no used_memory")

    def breakdown(self) -> tuple[int, int, int, int]:
        """Bytes of streams, of broker lists, of per-job keys; the number of streams."""
        streams, broker, job_keys, count = (int(n) for n in self._ask(
            "EVAL", _BREAKDOWN, "0").split())
        return streams, broker, job_keys, count


class Bench:
    def __init__(self, farm: localfarm.Farm, source: str, beaters: Beaters) -> None:
        self.farm = farm
        self.source = source
        self.beaters = beaters
        self.http = httpx.Client(base_url=farm.controller_url, timeout=120,
                                 limits=httpx.Limits(max_connections=16))
        self.redis = RedisProbe(farm.host, farm.redis_port)
        self.queued: list[str] = []
        self.pid = farm.procs["controller"].pid
        self.baseline_memory = self.redis.used_memory()

    def submit(self) -> float:
        body = {"source": self.source, "targets": [ARM], "placement": "native"}
        started = time.monotonic()
        response = self.http.post("/v1/builds", json=body)
        took = time.monotonic() - started
        if response.status_code != 201:
            raise RuntimeError(f"submit: HTTP {response.status_code} {response.text[:300]}")
        self.queued.append(response.json()["build_id"])
        return took

    def fill(self, depth: int) -> None:
        missing = depth - len(self.queued)
        if missing <= 0:
            return
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            for _ in pool.map(lambda _: self.submit(), range(missing)):
                pass
        print(f"  filled to {len(self.queued)} queued in {time.monotonic() - started:.0f} s",
              flush=True)

    def measure(self, depth: int, samples: int) -> Row:
        self.fill(depth)
        row = Row(depth=len(self.queued))
        row.submit = [self.submit() for _ in range(samples)]
        ids = list(self.queued)

        def reads(worker: int) -> list[float]:
            return [_timed(lambda i=i: self.http.get(
                f"/v1/builds/{ids[(worker * 31 + i * 7) % len(ids)]}"))
                for i in range(samples // 4 + 1)]

        with ThreadPoolExecutor(8) as pool:
            row.get_build = [t for batch in pool.map(reads, range(8)) for t in batch]
        row.workers = [_timed(lambda: self.http.get("/v1/workers")) for _ in range(samples // 2)]
        row.list_page = [_timed(lambda: self.http.get("/v1/builds"))
                         for _ in range(samples // 2)]
        self.beaters.take()  # those that waited behind the calls above
        time.sleep(15)  # heartbeats while nothing else is asked
        row.heartbeat = self.beaters.take()
        with self.beaters.paused():
            before = _cpu_seconds(self.pid)
            time.sleep(10)
            row.cpu_pct = 100 * (_cpu_seconds(self.pid) - before) / 10
        row.rss_mb = _rss_mb(self.pid)
        queued = max(1, len(self.queued))
        row.redis_per_build = (self.redis.used_memory() - self.baseline_memory) / queued
        streams, broker, job_keys, row.streams = self.redis.breakdown()
        row.streams_per_build = streams / queued
        row.broker_per_build = broker / queued
        row.job_keys_per_build = job_keys / queued
        return row


def _crate(root: Path) -> Path:
    crate = root / "tiny"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text('[package]\nname = "tiny"\nversion = "0.1.0"\n'
                                      'edition = "2021"\n')
    (crate / "src" / "main.rs").write_text('fn main() { println!("tiny"); }\n')
    return crate


def _table(rows: list[Row]) -> None:
    print()
    print(f"{'queued':>7} | {'submit p50/p99':>15} | {'GET build p50/p99':>17} | "
          f"{'workers p50/p99':>15} | {'list p50':>8} | {'heartbeat p50/p99':>17} | "
          f"{'CPU idle':>8} | {'RSS':>6} | {'Redis/build':>11} | "
          f"{'streams/broker/job keys per build (streams)':>44}")
    for r in rows:
        print(f"{r.depth:>7} | {_ms(r.submit, .5):>6.0f}/{_ms(r.submit, .99):<5.0f} ms | "
              f"{_ms(r.get_build, .5):>6.0f}/{_ms(r.get_build, .99):<5.0f} ms  | "
              f"{_ms(r.workers, .5):>6.0f}/{_ms(r.workers, .99):<5.0f} ms| "
              f"{_ms(r.list_page, .5):>5.0f} ms | "
              f"{_ms(r.heartbeat, .5):>7.0f}/{_ms(r.heartbeat, .99):<6.0f} ms | "
              f"{r.cpu_pct:>6.1f} % | {r.rss_mb:>3.0f} MB | {r.redis_per_build:>8.0f} B | "
              f"{r.streams_per_build:>8.0f} / {r.broker_per_build:>6.0f} / "
              f"{r.job_keys_per_build:>4.0f} B ({r.streams})")


def _goals(rows: list[Row]) -> None:
    first, last = rows[0], rows[-1]
    # The per-build figures mean nothing on an empty queue.
    deep = [r for r in rows if r.depth > 0] or rows
    submit_bound = GOAL_SUBMIT_P99_RATIO * _ms(first.submit, .99)
    checks = [
        (f"controller CPU with no requests < {GOAL_CPU_PCT:g} % at {last.depth}",
         f"{last.cpu_pct:.1f} %", last.cpu_pct < GOAL_CPU_PCT),
        (f"heartbeat p99 < {GOAL_HEARTBEAT_P99_MS:g} ms at {last.depth}",
         f"{_ms(last.heartbeat, .99):.0f} ms", _ms(last.heartbeat, .99) < GOAL_HEARTBEAT_P99_MS),
        (f"submit p99 at {last.depth} < {GOAL_SUBMIT_P99_RATIO}x p99 at {first.depth} "
         f"({submit_bound:.0f} ms)", f"{_ms(last.submit, .99):.0f} ms",
         _ms(last.submit, .99) < submit_bound),
        (f"GET /v1/builds first page p50 < {GOAL_LIST_P50_MS:g} ms at every depth",
         ", ".join(f"{_ms(r.list_page, .5):.0f}" for r in rows) + " ms",
         all(_ms(r.list_page, .5) < GOAL_LIST_P50_MS for r in rows)),
        (f"Redis < {GOAL_REDIS_BYTES} B per queued build at {deep[-1].depth}",
         f"{deep[-1].redis_per_build:.0f} B", deep[-1].redis_per_build < GOAL_REDIS_BYTES),
    ]
    print()
    for goal, figure, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {goal}: {figure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="0,1000,3000,10000",
                        help="queued builds to measure at, comma separated")
    parser.add_argument("--workers", type=int, default=100, help="fake workers heartbeating")
    parser.add_argument("--heartbeat-s", type=float, default=5.0,
                        help="each fake worker's heartbeat interval")
    parser.add_argument("--samples", type=int, default=100,
                        help="submits measured at each depth (other calls scale with it)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a controller setting, e.g. CROSSFARM_PLACER_INTERVAL_S=3600 to "
                             "see what the submits alone cost")
    parser.add_argument("--dir", type=Path, help="keep the farm's files here (default: a temp dir)")
    args = parser.parse_args()
    depths = sorted(int(d) for d in args.depths.split(","))
    with tempfile.TemporaryDirectory(prefix="crossfarm-scale-") as tmp:
        state = args.dir or Path(tmp) / "farm"
        state.mkdir(parents=True, exist_ok=True)
        farm = localfarm.Farm(dir=state)
        beaters = None
        try:
            farm.start_redis()
            farm.start_s3()
            farm.start_controller(**dict(e.split("=", 1) for e in args.env))
            with FarmClient(farm.controller_url) as client:
                source = send(client, scan(_crate(Path(tmp)))).status.digest
            beaters = Beaters(farm.controller_url, args.workers, args.heartbeat_s)
            beaters.start()
            time.sleep(args.heartbeat_s + 1)  # every fake worker has said hello
            bench = Bench(farm, source, beaters)
            rows = []
            for depth in depths:
                print(f"depth {depth}:", flush=True)
                rows.append(bench.measure(depth, args.samples))
                _table(rows[-1:])
            _table(rows)
            _goals(rows)
            if beaters.failures:
                print(f"\n{len(beaters.failures)} heartbeat(s) failed, the first: "
                      f"{beaters.failures[0]}")
        finally:
            if beaters is not None:
                beaters.stop()
            farm.stop()


if __name__ == "__main__":
    main()
