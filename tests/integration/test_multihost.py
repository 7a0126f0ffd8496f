"""Several hosts: the controller, Redis and SeaweedFS on one test host and two workers on
two others, each a network namespace joined by a bridge. A worker's link is cut mid-build:
the build completes on the other worker, exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
PREFIX = f"cf{os.getpid() % 10000}"
NET, HUB, W1, W2 = (f"{PREFIX}{role}" for role in ("net", "hub", "w1", "w2"))
ADDRESSES = {HUB: "10.231.0.1", W1: "10.231.0.2", W2: "10.231.0.3"}


def _ip(*args: str, netns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)


@pytest.fixture
def hosts():
    """Three test hosts on a bridge that lives in a namespace of its own: nothing of this
    network touches the machine's own interfaces."""
    names = [NET, HUB, W1, W2]
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        _ip("netns", "add", name)
        _ip("link", "set", "lo", "up", netns=name)
    _ip("link", "add", "br0", "type", "bridge", netns=NET)
    _ip("link", "set", "br0", "up", netns=NET)
    links = {}
    for host, address in ADDRESSES.items():
        inner, outer = f"{host}-e", f"{host}-b"
        _ip("link", "add", inner, "netns", host, "type", "veth", "peer", "name", outer,
            "netns", NET)
        _ip("addr", "add", f"{address}/24", "dev", inner, netns=host)
        _ip("link", "set", inner, "up", netns=host)
        _ip("link", "set", outer, "master", "br0", netns=NET)
        _ip("link", "set", outer, "up", netns=NET)
        links[host] = outer
    yield links
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    subprocess.run("docker ps -aq --filter label=io.crossfarm.worker=mh-w1 | xargs -r docker rm -f",
                   shell=True, capture_output=True)


def test_a_worker_cut_off_mid_build_stops_its_build_and_another_publishes_it_once(hosts, tmp_path):
    # The scenario runs on the hub and cuts worker 1's link on the bridge itself.
    run = subprocess.run(
        ["ip", "netns", "exec", HUB, sys.executable, str(HERE / "multihost_scenario.py"),
         str(tmp_path / "farm"), ADDRESSES[HUB], W1, W2, NET, hosts[W1]],
        capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    assert "error" not in outcome, outcome.get("error")
    print(f"link cut to re-run queued: {outcome['rerun_after_s']:.1f} s; "
          f"to worker 1's own build stopped: {outcome['fenced_after_s']:.1f} s")
    assert outcome["first"]["worker"] == "mh-w1"
    assert "worker mh-w1 was lost" in outcome["rerun"]["placed"]
    final = outcome["final"]
    assert (final["state"], final["attempt"], final["worker"]) == ("succeeded", 2, "mh-w2")
    build = final["job_id"]
    assert len(outcome["manifests"]) == 1
    assert outcome["manifests"][0].endswith("/attempt-2/manifest.json"), build
    assert outcome["w1_state"] == "lost"
    # Worker 1 stopped its build itself (its lease lapsed) and reported nothing.
    assert "abandoned: cut off from the controller" in outcome["w1_log"]
