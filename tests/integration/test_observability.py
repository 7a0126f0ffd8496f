"""Observability on the real farm: /metrics moves by exactly what one real build did,
/readyz names Redis while it is stopped and recovers when it is back (on a farm of this
module's own, so the shared farm's Redis is never touched), the workers' health
endpoints answer, and Flower, started as docs/operations.md says, lists the worker and
the build's task."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import NamedTuple

import httpx
import pytest
from conftest import CONTROLLER, WORKER_AMD64, localfarm
from exposition import Key, Scrape, key
from polling import until

from crossfarm.shared import keys
from crossfarm.shared.wire import BuildView, JobView

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"


def _scrape(url: str) -> Scrape:
    reply = httpx.get(f"{url}/metrics", timeout=30)
    assert reply.status_code == 200, reply.text
    return Scrape(reply.text)


def _build(cli, crate, env: dict[str, str] | None = None) -> BuildView:
    result = cli(crate, "build", "--target", X86, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return BuildView.model_validate(json.loads(result.stdout)["build"])


def _histogram(name: str, value: float, labels: dict[str, str], buckets: list[str]
               ) -> dict[Key, float]:
    """What one observation of `value` adds to a histogram: its count, its sum, and every
    bucket whose bound is at or above it."""
    moved = {key(f"{name}_count", **labels): 1.0, key(f"{name}_sum", **labels): value}
    for le in buckets:
        if float(le) >= value:
            moved[key(f"{name}_bucket", le=le, **labels)] = 1.0
    return moved


def _bounds(scrape: Scrape, name: str, labels: dict[str, str]) -> list[str]:
    return [found["le"] for found in scrape.labelled(f"{name}_bucket")
            if {k: v for k, v in found.items() if k != "le"} == labels]


def test_a_real_build_moves_the_counters_and_histograms_by_exactly_what_happened(
        farm, api, crate, cli):
    # A tree the farm has not stored yet (one it holds is looked up, not stored again,
    # and then the tree counter rightly stays put): other tests build this crate too.
    (crate / "nonce.txt").write_text(secrets.token_hex(16))
    stats_before = api.get("/v1/stats").json()
    before = _scrape(farm.controller_url)
    build = _build(cli, crate)
    after = _scrape(farm.controller_url)
    stats_after = api.get("/v1/stats").json()

    assert build.state == "succeeded"
    [job] = build.jobs
    assert (job.arch.value, job.mode.value if job.mode else None) == ("amd64", "native")
    [tenant] = [dict(labels)["tenant"] for name, labels in after.delta(before)
                if name == "crossfarm_builds_submitted_total"]
    took = (job.finished_at - job.started_at).total_seconds()
    waited = (job.started_at - job.queued_at).total_seconds()
    tree = api.get(f"/v1/sources/{build.source}").json()
    job_labels = {"arch": "amd64", "mode": "native"}
    expected: dict[Key, float] = {
        key("crossfarm_builds_submitted_total", tenant=tenant): 1,
        key("crossfarm_builds_finished_total", state="succeeded", tenant=tenant): 1,
        key("crossfarm_jobs_submitted_total", arch="amd64", tenant=tenant): 1,
        key("crossfarm_jobs_sent_total", arch="amd64", route="shared"): 1,
        key("crossfarm_jobs_started_total", tenant=tenant, **job_labels): 1,
        key("crossfarm_jobs_finished_total", state="succeeded", tenant=tenant,
            **job_labels): 1,
        **_histogram("crossfarm_job_duration_seconds", took, {**job_labels, "state": "succeeded"},
                     _bounds(after, "crossfarm_job_duration_seconds",
                             {**job_labels, "state": "succeeded"})),
        **_histogram("crossfarm_job_queue_wait_seconds", waited, job_labels,
                     _bounds(after, "crossfarm_job_queue_wait_seconds", job_labels)),
        # the source counters: what the farm's own wire counters saw, and the tree in full
        key("crossfarm_source_tree_bytes_total"): tree["total_bytes"],
        key("crossfarm_source_received_bytes_total"):
            stats_after["blob_bytes_received"] - stats_before["blob_bytes_received"],
        key("crossfarm_source_pack_bytes_total"):
            stats_after["pack_bytes_received"] - stats_before["pack_bytes_received"],
        key("crossfarm_source_blobs_received_total"):
            stats_after["blobs_received"] - stats_before["blobs_received"],
    }
    expected = {k: v for k, v in expected.items() if v}  # a sample that did not move
    gauges = {name for name, kind in after.families.items() if kind == "gauge"}
    moved = {k: v for k, v in after.delta(before).items()
             if k[0] not in gauges and not k[0].startswith("crossfarm_http_")}
    missing = {k: v for k, v in expected.items() if k not in moved}
    unexpected = {k: v for k, v in moved.items() if k not in expected}
    assert not missing, f"did not move: {missing}"
    assert not unexpected, f"moved unexpectedly: {unexpected}"
    assert moved == pytest.approx(expected, abs=1e-6)
    # and the API's own requests were timed, by route template
    assert after.delta(before)[key("crossfarm_http_request_duration_seconds_count",
                                   method="POST", route="/v1/builds", status="201")] == 1


def test_the_shared_worker_serves_healthz_and_a_ready_readyz(farm):
    url = f"http://127.0.0.1:{farm.health_ports['worker-amd64']}"
    assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
    ready = httpx.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"redis": "ok", "docker": "ok", "s3": "ok"}
    # and the controller counts it, from its heartbeats, with its two slots
    scrape = _scrape(farm.controller_url)
    assert scrape[("crossfarm_workers", {"arch": "amd64", "state": "online"})] >= 1
    assert scrape[("crossfarm_worker_slots", {"arch": "amd64"})] >= 2


class Watched(NamedTuple):
    farm: localfarm.Farm
    flower: str


@pytest.fixture(scope="module")
def watched(farm, tmp_path_factory) -> Iterator[Watched]:
    """A farm of this module's own: its own Redis (stopped by a test), controller and one
    worker, with task events on, and Flower on its broker; the object store is the shared
    farm's (nothing here stops it)."""
    # A bucket of its own on the shared object store: each controller's upload sweep
    # aborts the unfinished uploads its record does not know (this farm's builds are
    # unknown to the shared farm's controller), so two farms never share a bucket.
    own = localfarm.Farm(dir=tmp_path_factory.mktemp("watched"), s3_port=farm.s3_port,
                         bucket="crossfarm-watched")
    flower_port = localfarm.free_port()
    try:
        own.start_redis()
        own.start_controller(**CONTROLLER, CROSSFARM_TASK_EVENTS="1",
                             CROSSFARM_LOG_FORMAT="json")
        own.start_worker("obs-worker", **{**WORKER_AMD64, "CROSSFARM_TASK_EVENTS": "1",
                                          "CROSSFARM_LOG_FORMAT": "json"})
        # Flower 2 answers its API only with FLOWER_UNAUTHENTICATED_API (or auth) set.
        own._spawn("flower", [
            sys.executable, "-m", "celery", "-A", "crossfarm.worker.app", "flower",
            "--address=127.0.0.1", f"--port={flower_port}"],
            own.env(CROSSFARM_TASK_EVENTS="1", FLOWER_UNAUTHENTICATED_API="true"))
        yield Watched(own, f"http://127.0.0.1:{flower_port}")
    finally:
        own.stop()
        subprocess.run("docker ps -aq --filter label=io.crossfarm.worker=obs-worker "
                       "| xargs -r docker rm -f", shell=True, capture_output=True)


def _flower(watched: Watched, path: str) -> dict:
    try:
        reply = httpx.get(f"{watched.flower}{path}", timeout=30)
    except httpx.TransportError:
        return {}  # still starting
    return reply.json() if reply.status_code == 200 else {}


def test_flower_started_as_documented_lists_the_worker_and_the_builds_task(watched, crate, cli):
    workers = until(lambda: [name for name in _flower(watched, "/api/workers?refresh=1")
                             if name.startswith("obs-worker@")],
                    "Flower lists the worker", timeout=180, every=2)
    assert len(workers) == 1
    build = _build(cli, crate, env=watched.farm.env())
    assert build.state == "succeeded"
    job: JobView = build.jobs[0]
    task_id = keys.task_id(job.job_id, job.attempt)

    def succeeded() -> dict | None:
        task = _flower(watched, "/api/tasks").get(task_id)
        return task if task and task.get("state") == "SUCCESS" else None

    task = until(succeeded, f"Flower shows task {task_id} succeeded", timeout=120, every=1)
    assert task["name"] == keys.BUILD_TASK
    assert task["worker"] == workers[0]
    _the_workers_json_log_names_the_job_on_its_lines(watched.farm, build, job)


def _the_workers_json_log_names_the_job_on_its_lines(own: localfarm.Farm, build: BuildView,
                                                    job: JobView) -> None:
    # Celery prints its start-up banner with print(), not through logging: only records
    # are JSON lines, so the lines read here are those that start an object.
    text = (own.dir / "obs-worker.log").read_text()
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    about = [r for r in records if r.get("job_id") == job.job_id]
    said = [(r["logger"], r["message"]) for r in about]
    assert any(logger == "crossfarm.worker.tasks" and message.startswith("building ")
               for logger, message in said), said
    assert any(logger == "celery.app.trace" and "succeeded" in message
               for logger, message in said), said
    for record in about:
        assert (record["build_id"], record["attempt"], record["worker"], record["tenant"]) == (
            build.build_id, job.attempt, "obs-worker", "default"), record
    # one heartbeat line (the first that reached the controller), none per beat
    beats = [r["message"] for r in records if r["logger"] == "crossfarm.worker.heartbeat"
             and "heartbeat" in r["message"]]
    assert beats == ["obs-worker: heartbeats reach the controller"], beats
    assert not [r for r in records if r["logger"] in ("httpx", "httpcore")]


def _ready(url: str) -> httpx.Response | None:
    try:
        return httpx.get(f"{url}/readyz", timeout=30)
    except httpx.TransportError:
        return None


def test_readyz_names_redis_while_it_is_stopped_and_recovers_once_it_is_back(watched):
    own = watched.farm
    controller = own.controller_url
    worker = f"http://127.0.0.1:{own.health_ports['obs-worker']}"
    for url in (controller, worker):
        until(lambda url=url: (r := _ready(url)) is not None and r.status_code == 200,
              f"{url}/readyz ready", timeout=60)

    own.stop_process("redis")
    for url, others in ((controller, {"database": "ok", "s3": "ok"}),
                        (worker, {"docker": "ok", "s3": "ok"})):
        down = until(lambda url=url: (r := _ready(url)) is not None and r.status_code == 503
                     and r, f"{url}/readyz failing", timeout=60)
        assert down.headers["content-type"] == "application/problem+json"
        doc = down.json()
        assert doc["failing"] == ["redis"], doc
        assert {k: v for k, v in doc["checks"].items() if k != "redis"} == others
        assert "redis" in doc["detail"]
    # alive, though not ready: restarting the controller would not bring Redis back
    assert httpx.get(f"{controller}/healthz", timeout=10).status_code == 200

    own.start_redis()
    for url in (controller, worker):
        back = until(lambda url=url: (r := _ready(url)) is not None and r.status_code == 200
                     and r, f"{url}/readyz ready again", timeout=90)
        assert set(back.json()["checks"].values()) == {"ok"}
