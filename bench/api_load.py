#!/usr/bin/env python3
"""The controller's API under load, against a bare FastAPI hello-world in the same run.

Starts a farm with the project's own launcher (real Redis, SeaweedFS, SQLite, tokens
checked; no worker, so submitted builds wait), and a hello-world FastAPI app served by
uvicorn the same way. `wrk` (Debian's) drives each with the same connections and time:

    flock /tmp/crossfarm-integration.lock python3 bench/api_load.py [--duration 15] [-c 8]

Prints req/s, p50 and p99 for: status reads (`GET /v1/builds/{id}`) against hello's GET,
and submits (`POST /v1/builds`) against hello's POST of a body of the same size, with
the goals of issue #10 beside them, and the load average. Both servers and wrk share this
machine's cores, and so does other work: each pair runs in `--rounds` alternating slices
(hello, ours, hello, ours, …), so that load coming and going falls on both sides alike;
req/s is over all slices, p50 the slices' median, p99 their worst.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deploy" / "local"))
import farm as localfarm  # noqa: E402  (the launcher is a script beside the repo's code)

from crossfarm.client.api import FarmClient  # noqa: E402
from crossfarm.client.source import scan, send  # noqa: E402

HELLO = '''
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

app = FastAPI()


class Body(BaseModel):
    model_config = ConfigDict(extra="allow")


@app.get("/hello/{item}")
def read(item: str) -> dict[str, str]:
    return {"item": item, "state": "queued"}


@app.post("/hello")
def submit(body: Body) -> dict[str, object]:
    return body.model_dump()
'''

LUA = '''
wrk.method = "{method}"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{auth}
'''

LATENCY = re.compile(r"^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$", re.M)
RATE = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.M)
NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, method: str, body: str | None, headers: dict[str, str], duration: int,
        connections: int, work: Path) -> dict[str, float]:
    script = work / f"{method.lower()}-{abs(hash(url))}.lua"
    auth = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    script.write_text(LUA.format(method=method, body=json.dumps(body) if body else "nil",
                                 auth=auth))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
         url], capture_output=True, text=True, check=True).stdout
    latency = {p: float(v) * UNIT_MS[u] for p, v, u in LATENCY.findall(out)}
    errors = NON_2XX.search(out)
    if errors:
        raise SystemExit(f"{method} {url}: {errors.group(1)} non-2xx answers:\n{out}")
    return {"rps": float(RATE.search(out).group(1)),  # type: ignore[union-attr]
            "p50": latency["50"], "p99": latency["99"]}


def alternate(pair: dict[str, tuple[str, str, str | None, dict[str, str]]], duration: int,
              rounds: int, connections: int, work: Path) -> dict[str, dict[str, float]]:
    """Each of a pair's (url, method, body, headers) driven in turn, `rounds` slices of
    duration / rounds seconds each: req/s over all, p50 the median slice's, p99 the worst."""
    slices: dict[str, list[dict[str, float]]] = {name: [] for name in pair}
    for _ in range(rounds):
        for name, (url, method, body, headers) in pair.items():
            slices[name].append(wrk(url, method, body, headers, max(1, duration // rounds),
                                    connections, work))
    return {name: {"rps": statistics.fmean(row["rps"] for row in rows),
                   "p50": statistics.median(row["p50"] for row in rows),
                   "p99": max(row["p99"] for row in rows)}
            for name, rows in slices.items()}


def start_hello(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    (work / "hello_app.py").write_text(HELLO)
    port = localfarm.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "hello_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "info"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{url}/hello/x", timeout=1)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the hello-world app did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("-c", "--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:  # before a farm starts, not half way
        raise SystemExit("api_load.py needs wrk: apt-get install wrk")
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="crossfarm-api-load-"))
    (work / "farm").mkdir()
    farm = localfarm.Farm(dir=work / "farm", client_token="bench-client-token-0123456789")
    hello, hello_url = start_hello(work)
    try:
        farm.start_redis()
        farm.start_s3()
        farm.start_controller()
        client = FarmClient(farm.controller_url, token=farm.client_token)
        crate = work / "crate"
        shutil.copytree(REPO / "tests" / "fixtures" / "hello-c", crate)
        digest = send(client, scan(crate)).status.digest
        request = {"source": digest, "targets": ["aarch64-unknown-linux-gnu"],
                   "cargo": {"profile": "release"}, "placement": "native"}
        body = json.dumps(request)
        build_id = httpx.post(f"{farm.controller_url}/v1/builds", json=request,
                              headers=farm.auth).raise_for_status().json()["build_id"]
        run = {"duration": args.duration, "rounds": args.rounds,
               "connections": args.connections, "work": work}
        rows = {
            **alternate({
                "hello GET": (f"{hello_url}/hello/{build_id}", "GET", None, {}),
                "status read": (f"{farm.controller_url}/v1/builds/{build_id}", "GET", None,
                                farm.auth)}, **run),
            **alternate({
                "hello POST": (f"{hello_url}/hello", "POST", body, {}),
                "submit": (f"{farm.controller_url}/v1/builds", "POST", body, farm.auth)},
                **run),
        }
        load_after = os.getloadavg()[0]
    finally:
        hello.terminate()
        farm.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"{args.connections} connections, {args.duration} s each in {args.rounds} alternating "
          f"slices, tokens checked; load average (1 min) {load_before:.2f} before, "
          f"{load_after:.2f} after\n")
    print(f"{'':12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, row in rows.items():
        print(f"{name:12} {row['rps']:8.0f} {row['p50']:8.1f} {row['p99']:8.1f}")
    reads = rows["status read"]["rps"] / rows["hello GET"]["rps"]
    submits = rows["submit"]["rps"] / rows["hello POST"]["rps"]
    worst_p99 = max(rows["status read"]["p99"], rows["submit"]["p99"])
    print()
    print(f"reads   / hello GET : {reads:.2f} (goal >= 0.90) {'ok' if reads >= 0.9 else 'MISSED'}")
    print(f"submits / hello POST: {submits:.2f} (goal >= 0.30) "
          f"{'ok' if submits >= 0.3 else 'MISSED'}")
    print(f"worst p99           : {worst_p99:.1f} ms (goal < 50) "
          f"{'ok' if worst_p99 < 50 else 'MISSED'}")


if __name__ == "__main__":
    main()
