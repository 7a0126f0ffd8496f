"""Faults injected mid-build on the real farm. Each test asserts counts: how many
attempts, which one published, what is left running."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from datetime import UTC, datetime

import boto3
import httpx
import pytest
from conftest import CONTROLLER, WORKER_AMD64
from gate import gate, open_all, open_gate, wait_at_gate
from polling import until

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send
from crossfarm.shared.storage import S3Store, StorageSettings

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"


def _source(farm, crate, gated: bool = False) -> str:
    """The crate uploaded; `gated`: its build step waits at a gate the test opens."""
    if gated:
        gate(crate)
    with FarmClient(farm.controller_url, token=farm.client_token) as client:
        return send(client, scan(crate)).status.digest



def _job(api, build_id: str) -> dict:
    return api.get(f"/v1/builds/{build_id}").json()["jobs"][0]


def _finished(api, build_id: str, timeout: float = 300) -> dict:
    return until(lambda: (j := _job(api, build_id))["state"] in ("succeeded", "failed",
                                                                  "cancelled") and j,
                  f"build {build_id} to finish", timeout)


def _containers(label: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def _store(farm) -> S3Store:
    return S3Store(StorageSettings(endpoint_url=farm.s3_url, bucket="crossfarm",
                                   access_key="crossfarm", secret_key="crossfarm-local-secret"))


def _manifests(farm, build_id: str) -> list[str]:
    return sorted(key for key in _store(farm).list_keys(f"builds/{build_id}/")
                  if key.endswith("manifest.json"))


def test_kill_9_of_a_worker_mid_build_reruns_the_job_once_elsewhere(farm, api, crate, only):
    victim = farm.start_worker("worker-victim", CROSSFARM_HEARTBEAT_S="1")
    source = _source(farm, crate, gated=True)
    build = api.post("/v1/builds", json={"source": source, "targets": [X86]}).json()
    build_id = build["build_id"]
    first = until(lambda: (j := _job(api, build_id))["state"] == "running" and j, "start")
    assert first["worker"] == "worker-victim"
    wait_at_gate(first["job_id"], attempt=1)  # its build step surely runs

    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    killed = time.monotonic()
    api.delete("/v1/workers/worker-amd64/drain")  # a live worker to take the re-run
    rerun = until(lambda: (j := _job(api, build_id))["attempt"] == 2 and j, "the re-run")
    print(f"worker kill -9 to re-run queued: {time.monotonic() - killed:.1f} s")
    open_gate(first["job_id"], attempt=2)
    final = _finished(api, build_id)

    assert final["state"] == "succeeded"
    assert (final["attempt"], final["worker"]) == (2, "worker-amd64")
    assert "worker worker-victim was lost" in rerun["placed"]
    assert _manifests(farm, build_id) == [f"builds/{build_id}/{X86}/attempt-2/manifest.json"]
    # The dead worker's container is an orphan until a worker of that name starts again.
    farm.start_worker("worker-victim", CROSSFARM_HEARTBEAT_S="1")
    until(lambda: not _containers(f"io.crossfarm.job={first['job_id']}"), "the reap")
    farm.stop_process("worker-victim")


def test_kill_9_of_the_pool_process_reruns_the_job_and_reaps_its_container(
        farm, api, crate, only):
    victim = farm.start_worker("worker-pool", CROSSFARM_HEARTBEAT_S="1")
    source = _source(farm, crate, gated=True)
    build = api.post("/v1/builds", json={"source": source, "targets": [X86]}).json()
    build_id = build["build_id"]
    first = until(lambda: (j := _job(api, build_id))["state"] == "running" and j, "start")
    wait_at_gate(first["job_id"], attempt=1)

    children = subprocess.run(["pgrep", "-P", str(victim.pid)], capture_output=True,
                              text=True).stdout.split()
    assert children, "no pool process found"
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    # The worker lives on and no longer lists the job: its lease lapses after the grace.
    until(lambda: not _containers(f"io.crossfarm.job={first['job_id']},"
                                   "io.crossfarm.attempt=1"), "the orphan reaped")
    open_gate(first["job_id"], attempt=2)
    final = _finished(api, build_id)
    assert final["state"] == "succeeded"
    assert final["attempt"] == 2
    assert "no longer runs it" in final["placed"]
    assert _manifests(farm, build_id) == [f"builds/{build_id}/{X86}/attempt-2/manifest.json"]
    farm.stop_process("worker-pool")


def test_redis_flushed_while_a_sent_job_waits_the_reconciler_resends_it(farm, api, crate):
    # A job reaches the broker only once the placer sends it to a free slot, so the
    # worker is frozen first: still online for the placer (until its heartbeats are
    # missed), it takes nothing, and the message waits in Redis to be flushed.
    source = _source(farm, crate)
    worker = farm.procs["worker-amd64"].pid
    os.killpg(worker, signal.SIGSTOP)
    try:
        build = api.post("/v1/builds", json={"source": source, "targets": [X86]}).json()
        until(lambda: _job(api, build["build_id"])["waiting"] is None, "the job to be sent")
        subprocess.run(["redis-cli", "-p", str(farm.redis_port), "FLUSHALL"], check=True,
                       capture_output=True)
        # Its queue empty, no worker running it: held again as attempt 2, before the
        # worker can read a message of attempt 1 it may already hold.
        until(lambda: _job(api, build["build_id"])["attempt"] == 2, "the re-send")
    finally:
        os.killpg(worker, signal.SIGCONT)
    final = _finished(api, build["build_id"])
    assert final["state"] == "succeeded"
    assert final["attempt"] == 2
    assert final["placed"].endswith("(re-sent: the broker lost it)")


def test_controller_restart_mid_build_loses_nothing(farm, api, crate):
    # A long fleet bound while this test runs: a controller slow to come back on a busy
    # machine must not lapse the worker's lease (a lapsed lease is the re-run of the
    # kill -9 and link-cut tests, not this test's subject).
    patient = {**CONTROLLER, "CROSSFARM_LOST_AFTER_S": "300"}
    _restart_controller(farm, api, patient)
    try:
        source = _source(farm, crate, gated=True)
        build = api.post("/v1/builds", json={"source": source, "targets": [X86]}).json()
        job = until(lambda: (j := _job(api, build["build_id"]))["state"] == "running" and j,
                    "start")
        wait_at_gate(job["job_id"])
        farm.stop_process("controller")
        farm.start_controller(**patient)
        open_gate(job["job_id"])
        final = _finished(api, build["build_id"])
    finally:
        _restart_controller(farm, api, CONTROLLER)
    assert final["state"] == "succeeded"
    assert final["attempt"] == 1


def _restart_controller(farm, api, settings: dict[str, str]) -> None:
    """Restart the controller with `settings`, then wait until the shared worker's lease
    has been renewed under them (a heartbeat answered after the restart)."""
    farm.stop_process("controller")
    restarted = datetime.now(UTC)
    farm.start_controller(**settings)

    def renewed() -> bool:
        workers = api.get("/v1/workers").json()["workers"]
        return any(w["name"] == "worker-amd64"
                   and datetime.fromisoformat(w["last_seen"]) > restarted for w in workers)

    until(renewed, "a heartbeat answered by the restarted controller")


def test_cancel_stops_the_running_container_and_publishes_nothing(farm, api, crate):
    # The gate is never opened: only the cancel can end this build.
    source = _source(farm, crate, gated=True)
    build = api.post("/v1/builds", json={"source": source, "targets": [X86]}).json()
    job = until(lambda: (j := _job(api, build["build_id"]))["state"] == "running" and j,
                 "start")
    wait_at_gate(job["job_id"])
    started = time.monotonic()
    api.post(f"/v1/builds/{build['build_id']}/cancel")
    until(lambda: not _containers(f"io.crossfarm.job={job['job_id']}"), "container gone")
    print(f"cancel to container gone: {time.monotonic() - started:.2f} s")
    assert _job(api, build["build_id"])["state"] == "cancelled"
    assert _manifests(farm, build["build_id"]) == []


def test_a_build_past_its_timeout_is_killed_and_fails_with_reason_timeout(farm, api, crate):
    source = _source(farm, crate, gated=True)  # never opened: only the timeout ends it
    build = api.post("/v1/builds", json={"source": source, "targets": [X86],
                                         "timeout_s": 15}).json()
    final = _finished(api, build["build_id"])
    assert final["state"] == "failed"
    assert final["reason"].startswith("timeout: the build ran past 15 s")
    assert not _containers(f"io.crossfarm.job={final['job_id']}")


def test_a_build_silent_and_idle_past_the_stall_limit_fails_as_stalled_not_timed_out(
        farm, api, crate, only):
    # What a qemu-user hang looks like from outside: a build that prints nothing and uses
    # no CPU time. Its time limit is an hour: only the stall watchdog can end it.
    farm.start_worker("worker-stall", CROSSFARM_HEARTBEAT_S="1", CROSSFARM_STALL_S="15")
    try:
        build_rs = (crate / "build.rs").read_text()
        (crate / "build.rs").write_text(
            "fn main() { std::thread::sleep(std::time::Duration::from_secs(3600)); }\n")
        hung = api.post("/v1/builds", json={"source": _source(farm, crate), "targets": [X86],
                                            "timeout_s": 3600}).json()
        final = _finished(api, hung["build_id"])
        assert final["worker"] == "worker-stall"
        assert final["state"] == "failed"
        assert final["reason"].startswith("stalled: the build printed nothing and used "), (
            final["reason"])
        assert " of CPU time in 15 s, and was stopped: " in final["reason"]
        assert "timeout" not in final["reason"]
        assert not _containers(f"io.crossfarm.job={final['job_id']}")
        print(f"stalled build: {final['reason']}")

        # the same worker builds the crate as it was, watched by the same watchdog
        (crate / "build.rs").write_text(build_rs)
        ok = api.post("/v1/builds", json={"source": _source(farm, crate), "targets": [X86],
                                          "timeout_s": 3600}).json()
        built = _finished(api, ok["build_id"])
        assert (built["state"], built["worker"]) == ("succeeded", "worker-stall"), built
    finally:
        farm.stop_process("worker-stall")


def test_out_of_memory_fails_with_that_reason_and_is_not_retried(farm, api, crate, only):
    small = farm.start_worker("worker-small", CROSSFARM_HEARTBEAT_S="1",
                              CROSSFARM_BUILD_MEMORY_BYTES=str(400 * 1024**2))
    (crate / "build.rs").write_text(
        "fn main() {\n"
        "    let mut hog: Vec<Vec<u8>> = Vec::new();\n"
        "    loop { hog.push(vec![1u8; 64 << 20]); }\n"
        "}\n")
    source = _source(farm, crate)
    build = api.post("/v1/builds", json={"source": source, "targets": [X86]}).json()
    final = _finished(api, build["build_id"])
    assert final["state"] == "failed"
    assert final["reason"].startswith("out-of-memory")
    assert final["attempt"] == 1
    assert small.poll() is None
    farm.stop_process("worker-small")


def test_sigterm_mid_build_finishes_the_running_job_then_exits(farm, api, crate, only):
    proc = farm.start_worker("worker-sigterm", CROSSFARM_HEARTBEAT_S="1")
    source = _source(farm, crate, gated=True)
    build = api.post("/v1/builds", json={"source": source, "targets": [X86]}).json()
    job = until(lambda: (j := _job(api, build["build_id"]))["state"] == "running" and j,
                 "start")
    assert job["worker"] == "worker-sigterm"
    wait_at_gate(job["job_id"])
    proc.send_signal(signal.SIGTERM)  # the main process only, as an init system would
    assert until(lambda: farm.worker_state("worker-sigterm") == "draining", "draining")
    open_gate(job["job_id"])  # the build goes on only once the worker drains
    final = _finished(api, build["build_id"])
    assert (final["state"], final["attempt"], final["worker"]) == (
        "succeeded", 1, "worker-sigterm")
    assert proc.wait(timeout=60) == 0
    assert farm.worker_state("worker-sigterm") == "drained"
    farm.procs.pop("worker-sigterm")


def test_a_storage_outage_during_the_build_is_ridden_out_and_published_once(farm, api, crate):
    source = _source(farm, crate, gated=True)
    build = api.post("/v1/builds", json={"source": source, "targets": [X86]}).json()
    job_id = build["jobs"][0]["job_id"]
    with api.stream("GET", f"/v1/builds/{build['build_id']}/events",
                    timeout=httpx.Timeout(30, read=600)) as events:
        lines = events.iter_lines()
        wait_at_gate(job_id)  # the source is in; nothing is uploaded yet
        farm.stop_process("seaweedfs")
        try:  # the build ends while the store is down; it stays down until the worker's
            # own retry says so, past the retries the S3 client makes by itself
            open_gate(job_id)
            _log_line(lines, "crossfarm: artifact upload: object store unreachable")
        finally:
            farm.start_s3()
    final = _finished(api, build["build_id"])
    assert (final["state"], final["attempt"]) == ("succeeded", 1)
    assert _manifests(farm, build["build_id"]) == [
        f"builds/{build['build_id']}/{X86}/attempt-1/manifest.json"]
    log = _store(farm).get_bytes(f"builds/{build['build_id']}/{X86}/attempt-1/build.log")
    assert b"crossfarm: artifact upload: object store unreachable" in log
    assert b"; retrying in " in log


def test_storage_down_past_the_retry_window_fails_the_job_with_a_storage_error(
        farm, api, crate, only):
    farm.start_worker("worker-s3-short", CROSSFARM_STORAGE_RETRY_S="3",
                      CROSSFARM_HEARTBEAT_S="1")
    source = _source(farm, crate, gated=True)
    build = api.post("/v1/builds", json={"source": source, "targets": [X86]}).json()
    job_id = build["jobs"][0]["job_id"]
    wait_at_gate(job_id)
    farm.stop_process("seaweedfs")
    try:
        open_gate(job_id)
        final = _finished(api, build["build_id"], timeout=300)
    finally:
        farm.start_s3()
        farm.stop_process("worker-s3-short")
    assert (final["state"], final["attempt"]) == ("failed", 1)
    assert final["reason"].startswith("storage: object store unreachable")
    assert final["reason"].endswith("retryable: resubmit once the object store is back")
    assert _manifests(farm, build["build_id"]) == []


def test_unfinished_uploads_are_aborted_unless_their_attempt_is_running(farm, api, crate):
    # Parts a cut-off upload left behind, as a worker's S3 client would have started them.
    source = _source(farm, crate, gated=True)  # opened once the sweep has been seen
    build = api.post("/v1/builds", json={"source": source, "targets": [X86]}).json()
    job = until(lambda: (j := _job(api, build["build_id"]))["state"] == "running" and j,
                "start")
    wait_at_gate(job["job_id"])
    prefix = f"builds/{build['build_id']}/{X86}"
    s3 = _store(farm)
    live = _start_upload(farm, f"{prefix}/attempt-{job['attempt']}/artifacts/big")
    stale = _start_upload(farm, f"{prefix}/attempt-{job['attempt'] + 1}/artifacts/big")
    until(lambda: [u.key for u in s3.pending_uploads(prefix)] == [live],
          "the stale upload aborted")
    open_gate(job["job_id"])
    done = _finished(api, build["build_id"])
    assert done["state"] == "succeeded"
    assert stale not in s3.list_keys(prefix)
    # Once the job has finished, the sweep aborts an upload even under its own attempt
    # (the worker, which also cleans there before publishing, has long moved on).
    late = _start_upload(farm, f"{prefix}/attempt-{done['attempt']}/artifacts/late")
    until(lambda: late not in [u.key for u in s3.pending_uploads(prefix)],
          "the finished attempt's upload aborted")


def _log_line(lines, text: str) -> str:
    """Read a build's event stream (its lines) on until a log line holds `text`."""
    for line in lines:
        if line.startswith("data:") and text in line:
            return line
    raise AssertionError(f"the build ended without logging {text!r}")


def _start_upload(farm, key: str) -> str:
    """Start a multipart upload with one 5 MiB part and leave it unfinished.

    The farm's sweep runs every second, so an upload no running attempt owns may be
    aborted before its part is sent: the part's NoSuchUpload is then the sweep's work,
    not an error. (A live upload aborted this way fails the caller's later check.)"""
    s3 = boto3.client("s3", endpoint_url=farm.s3_url, aws_access_key_id="crossfarm",
                      aws_secret_access_key="crossfarm-local-secret", region_name="us-east-1")
    upload = s3.create_multipart_upload(Bucket="crossfarm", Key=key)
    with contextlib.suppress(s3.exceptions.NoSuchUpload):
        s3.upload_part(Bucket="crossfarm", Key=key, UploadId=upload["UploadId"],
                       PartNumber=1, Body=b"\0" * (5 * 1024 * 1024))
    return key


def test_a_build_longer_than_the_visibility_timeout_runs_once(farm, api, crate, only):
    # Redis hands an unacked message out again after the visibility timeout, even while
    # its build still runs; the redelivered copy must be refused, not built twice.
    short = {"CROSSFARM_VISIBILITY_TIMEOUT_S": "5", "CROSSFARM_HEARTBEAT_S": "1"}
    farm.start_worker("worker-vt-a", **short)
    farm.start_worker("worker-vt-b", **short)
    source = _source(farm, crate, gated=True)
    build = api.post("/v1/builds", json={"source": source, "targets": [X86]}).json()
    job_id = build["jobs"][0]["job_id"]
    wait_at_gate(job_id)

    def logs() -> str:
        return "".join((farm.dir / f"worker-vt-{x}.log").read_text() for x in "ab")

    # The build waits at its gate until the redelivered copy has been refused.
    until(lambda: f"job {job_id} not run: job is running" in logs(), "the redelivery")
    open_gate(job_id)
    final = _finished(api, build["build_id"])
    farm.stop_process("worker-vt-a")
    farm.stop_process("worker-vt-b")
    assert (final["state"], final["attempt"]) == ("succeeded", 1)
    assert _manifests(farm, build["build_id"]) == [
        f"builds/{build['build_id']}/{X86}/attempt-1/manifest.json"]


def test_redis_restart_mid_build_the_build_and_its_follower_finish(farm, api, crate):
    import sys


    gate(crate)
    follower = subprocess.Popen(
        [sys.executable, "-m", "crossfarm.client", "build", "--target", X86, "--json"],
        cwd=crate, env=farm.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    builds = until(lambda: [b for b in api.get("/v1/builds", params={"limit": 1}).json()
                             if b["jobs"][0]["state"] == "running"], "start")
    job_id = builds[0]["jobs"][0]["job_id"]
    wait_at_gate(job_id)
    farm.stop_process("redis")  # no persistence: queues, streams and flags are gone
    farm.start_redis()
    # Celery does not always get its consumer back after a broker restart (celery#8030):
    # then the worker exits (Celery gives up, or the worker's watchdog exits it with 3)
    # for its supervisor to restart it. Play the supervisor while the follower waits.
    worker, restarts = farm.procs["worker-amd64"], 0
    try:
        deadline = time.monotonic() + 400
        while follower.poll() is None:
            assert time.monotonic() < deadline, "the follower never finished"
            if worker.poll() is not None:  # its watchdog (3) or Celery itself gave up
                print(f"worker-amd64 exited with {worker.returncode}: restarting it")
                farm.procs.pop("worker-amd64")
                worker, restarts = farm.start_worker("worker-amd64", **WORKER_AMD64), restarts + 1
            open_all(job_id)  # Redis is back: let whichever attempt runs go on
            time.sleep(1)
        _out, err = follower.communicate()
        assert follower.returncode == 0, err
        final = _job(api, builds[0]["build_id"])
        assert final["state"] == "succeeded"
        assert final["attempt"] in (1, 2)  # re-run if the lease lapsed with the consumer
        assert (crate / "target" / X86 / "debug" / "hello-c").is_file()
        assert _manifests(farm, builds[0]["build_id"]) == [
            f"builds/{builds[0]['build_id']}/{X86}/attempt-{final['attempt']}/manifest.json"]
        print(f"redis restart: attempt {final['attempt']}, worker restarts {restarts}")
    finally:
        # Later tests share this worker: give them one with a fresh broker connection.
        farm.stop_process("worker-amd64")
        farm.start_worker("worker-amd64", **WORKER_AMD64)
