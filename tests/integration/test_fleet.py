"""The fleet against the real farm: placement policy, waiting reasons, wait limits,
drain, SIGTERM and loss of a worker."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from polling import until

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"


@pytest.fixture
def source(farm, crate) -> str:
    with FarmClient(farm.controller_url, token=farm.client_token) as client:
        return send(client, scan(crate)).status.digest



def _job(api, build_id: str) -> dict:
    return api.get(f"/v1/builds/{build_id}").json()["jobs"][0]


def test_native_placement_waits_with_the_reason_and_fails_at_its_wait_limit(api, source):
    build = api.post("/v1/builds", json={"source": source, "targets": [ARM],
                                         "placement": "native", "wait_limit_s": 4}).json()
    job = build["jobs"][0]
    assert job["queue"] == "crossfarm.builds.arm64"
    assert job["waiting"].startswith("waiting: no arm64 worker online")
    assert "--placement cross-ok" in job["waiting"]
    failed = until(lambda: (j := _job(api, build["build_id"]))["state"] == "failed" and j,
                    "the wait limit")
    assert failed["reason"].startswith("no worker started it within its wait limit of 4 s")
    assert failed["worker"] is None


def test_a_native_job_with_no_worker_says_its_place_in_line(api, source):
    # Without a wait limit, so the job is surely still waiting when the test looks.
    build = api.post("/v1/builds", json={"source": source, "targets": [ARM],
                                         "placement": "native"}).json()
    try:
        assert until(lambda: "position 1 in crossfarm.builds.arm64" in (
            _job(api, build["build_id"])["waiting"] or ""), "the placer's position")
    finally:
        api.post(f"/v1/builds/{build['build_id']}/cancel")


def test_cross_ok_placement_runs_on_the_amd64_worker_and_says_why(api, source):
    build = api.post("/v1/builds", json={"source": source, "targets": [ARM],
                                         "placement": "cross-ok"}).json()
    job = until(lambda: (j := _job(api, build["build_id"]))["state"] in ("succeeded", "failed")
                 and j, "the build", timeout=300)
    assert job["state"] == "succeeded"
    assert job["mode"] == "cross"
    assert job["worker"] == "worker-amd64"
    assert job["placed"] == ("cross: no arm64 worker online; cross-ok allows a cross toolchain")


def test_a_drained_worker_takes_no_new_job_and_resumes_when_undrained(farm, api, source, cli,
                                                                     tmp_path):
    # through the CLI, as an operator does it
    drained = cli(tmp_path, "drain", "worker-amd64", "--json")
    assert drained.returncode == 0, drained.stderr
    assert json.loads(drained.stdout)["drain_requested"] is True
    try:
        assert until(lambda: farm.worker_state("worker-amd64") == "drained", "drained")
        build = api.post("/v1/builds", json={"source": source, "targets": [X86]}).json()
        assert _job(api, build["build_id"])["waiting"].startswith(
            "waiting: no amd64 worker online")
        time.sleep(4)  # a worker still consuming would have started it by now
        assert _job(api, build["build_id"])["state"] == "queued"
    finally:
        undone = cli(tmp_path, "drain", "worker-amd64", "--undo")
        assert undone.returncode == 0, undone.stderr
    assert undone.stdout.startswith("worker-amd64: ")
    job = until(lambda: (j := _job(api, build["build_id"]))["state"] in ("succeeded", "failed")
                 and j, "the build after undrain", timeout=300)
    assert job["state"] == "succeeded"
    assert farm.worker_state("worker-amd64") == "online"


def test_draining_an_unknown_worker_is_404(api):
    assert api.post("/v1/workers/nobody/drain").status_code == 404


def test_sigterm_drains_a_worker_then_it_is_reported_lost(farm):
    proc = farm.start_worker("worker-term", CROSSFARM_HEARTBEAT_S="1")
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    farm.procs.pop("worker-term")
    assert farm.worker_state("worker-term") in ("draining", "drained")
    _assert_lost_once_silent_for_the_bound(farm, "worker-term")


def test_a_killed_worker_is_reported_lost_within_the_bound(farm):
    proc = farm.start_worker("worker-kill", CROSSFARM_HEARTBEAT_S="1")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    farm.procs.pop("worker-kill")
    killed = time.monotonic()
    _assert_lost_once_silent_for_the_bound(farm, "worker-kill")
    print(f"kill -9 to lost: {time.monotonic() - killed:.1f} s (bound 6 s, heartbeat 1 s)")


def _assert_lost_once_silent_for_the_bound(farm, name: str) -> None:
    """The worker is reported lost, and only once its last heartbeat is older than the
    controller's bound (6 s, conftest): silence, not a slow machine, is what counts."""
    def lost() -> dict | None:
        fleet = httpx.get(f"{farm.controller_url}/v1/workers", headers=farm.auth).json()
        seen_at = datetime.now(UTC)  # after the controller judged: never before its now
        worker = next(w for w in fleet["workers"] if w["name"] == name)
        return worker["state"] == "lost" and {**worker, "seen_at": seen_at}

    worker = until(lost, f"{name} lost")
    silent = worker["seen_at"] - datetime.fromisoformat(worker["last_seen"])
    assert silent >= timedelta(seconds=6), worker


def test_a_worker_keeps_its_blob_cache_within_budget(farm, api, crate, only):
    farm.start_worker("worker-cache", CROSSFARM_BLOB_CACHE_BYTES="0", CROSSFARM_HEARTBEAT_S="1")
    cache = farm.dir / "worker-cache" / "blobs"
    cache.mkdir(parents=True, exist_ok=True)
    day_ago = time.time() - 86400
    for name in ("f" * 64, ".partial-dead"):  # a blob no build used today; a dead write
        (cache / name).write_bytes(b"x" * 1000)
        os.utime(cache / name, (day_ago, day_ago))
    try:
        local = scan(crate)
        with FarmClient(farm.controller_url, token=farm.client_token) as client:
            digest = send(client, local).status.digest
        build = api.post("/v1/builds", json={"source": digest, "targets": [X86]}).json()
        job = until(lambda: (j := _job(api, build["build_id"]))["state"] == "succeeded" and j,
                    "the build", timeout=300)
    finally:
        farm.stop_process("worker-cache")
    assert job["worker"] == "worker-cache"
    # The old files went; the blobs this build used stay (a build may be reading them).
    assert sorted(p.name for p in cache.iterdir() if p.name != ".lock") == sorted(local.files)
    with api.stream("GET", f"/v1/builds/{build['build_id']}/events") as events:
        log = "".join(events.iter_text())
    assert "blob cache trimmed to its budget: 2 file(s), 2000 bytes freed" in log
