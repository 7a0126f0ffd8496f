"""/metrics: the instruments move by exactly what the use-cases did, the gauges read the
record at scrape time, and labels never carry an id. A real SQLite store; fakes for the
broker, the event streams and the object store."""

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from exposition import Scrape, key
from farm_fakes import make_api

from crossfarm.controller import fleet, jobs
from crossfarm.controller.builds import submit_build
from crossfarm.controller.gauges import FarmGauges
from crossfarm.controller.metrics import FarmMetrics
from crossfarm.controller.store.jobs import Outcome
from crossfarm.shared.arch import BuildMode, Placement
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import BuildRequest, JobStarted, SourceStatus, WorkerHeartbeat

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
DIGEST = "0123456789abcdef" * 4
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "crossfarm.json"


@pytest.fixture
def api(tmp_path):
    api = make_api(tmp_path, default_placement=Placement.NATIVE)
    for tenant in ("acme", "bolt"):
        api.farm.store.sources.add_tree(SourceStatus(digest=DIGEST, files=1, total_bytes=10),
                                        tenant)
    yield api
    api.farm.store.close()


def _scrape(farm, now=None):
    return Scrape(farm.metrics.exposition(FarmGauges(farm, now)).decode())


def _worker(farm, name, arch="amd64", concurrency=2, running=(), draining=False, warm=()):
    queues = {f"crossfarm.builds.{arch}": BuildMode.NATIVE}
    if arch == "amd64":
        queues["crossfarm.builds.arm64.cross"] = BuildMode.CROSS
    info = WorkerHeartbeat(hostname=name, arch=arch, queues=queues, cpus=2, memory_bytes=2**30,
                           builder_image="crossfarm/builder:1", targets=[X86], version="t",
                           concurrency=concurrency, running=list(running), draining=draining,
                           warm=list(warm))
    fleet.heartbeat(farm, name, info, fresh_start=True)


def _start(farm, job_id, worker="w1"):
    verdict = jobs.start(farm, job_id, JobStarted(
        attempt=1, worker=worker, hostname="h1", mode=BuildMode.NATIVE,
        consumed_from="crossfarm.builds.amd64"))
    assert verdict.proceed


def test_a_build_that_runs_and_succeeds_moves_each_count_by_exactly_one(api):
    farm = api.farm
    before = _scrape(farm)
    build = submit_build(farm, BuildRequest(source=DIGEST, targets=[X86]), "acme")
    job_id = build.jobs[0].job_id
    _start(farm, job_id)
    jobs.finish(farm, job_id, 1, Outcome(state=BuildState.SUCCEEDED, exit_code=0))
    after = _scrape(farm)
    job = farm.store.jobs.get(job_id).view
    took = (job.finished_at - job.started_at).total_seconds()
    waited = (job.started_at - job.queued_at).total_seconds()
    assert after.delta(before) == pytest.approx({
        key("crossfarm_builds_submitted_total", tenant="acme"): 1,
        key("crossfarm_jobs_submitted_total", arch="amd64", tenant="acme"): 1,
        key("crossfarm_jobs_started_total", arch="amd64", mode="native", tenant="acme"): 1,
        key("crossfarm_jobs_finished_total", state="succeeded", arch="amd64", mode="native",
            tenant="acme"): 1,
        key("crossfarm_builds_finished_total", state="succeeded", tenant="acme"): 1,
        key("crossfarm_job_duration_seconds_count", arch="amd64", mode="native",
            state="succeeded"): 1,
        key("crossfarm_job_duration_seconds_sum", arch="amd64", mode="native",
            state="succeeded"): took,
        key("crossfarm_job_queue_wait_seconds_count", arch="amd64", mode="native"): 1,
        key("crossfarm_job_queue_wait_seconds_sum", arch="amd64", mode="native"): waited,
        # every bucket at or above the observation moved by one, the +Inf one always
        **{k: 1 for k in after.delta(before) if k[0].endswith("_bucket")},
    })
    buckets = {k: v for k, v in after.delta(before).items()
               if k[0] == "crossfarm_job_duration_seconds_bucket"}
    assert key("crossfarm_job_duration_seconds_bucket", arch="amd64", mode="native",
               state="succeeded", le="+Inf") in buckets


def test_a_job_cancelled_while_queued_counts_as_cancelled_with_no_duration(api):
    farm = api.farm
    before = _scrape(farm)
    build = submit_build(farm, BuildRequest(source=DIGEST, targets=[ARM]), "acme")
    jobs.finish(farm, build.jobs[0].job_id, 1, Outcome(state=BuildState.CANCELLED))
    moved = _scrape(farm).delta(before)
    assert moved[key("crossfarm_jobs_finished_total", state="cancelled", arch="arm64",
                     mode="native", tenant="acme")] == 1
    assert moved[key("crossfarm_builds_finished_total", state="cancelled", tenant="acme")] == 1
    assert not [k for k in moved if k[0].startswith("crossfarm_job_duration")]


def test_a_build_whose_last_two_jobs_each_read_it_ended_counts_once():
    metrics = FarmMetrics()
    view = _ended_build()
    metrics.finished(view.jobs[0], "acme", view)
    metrics.finished(view.jobs[1], "acme", view)
    text = Scrape(metrics.exposition().decode())
    assert text[("crossfarm_builds_finished_total", {"state": "succeeded", "tenant": "acme"})] == 1
    assert text[("crossfarm_jobs_finished_total", {"state": "succeeded", "arch": "amd64",
                                                   "mode": "native", "tenant": "acme"})] == 2


def _ended_build():
    from crossfarm.shared.wire import BuildView, JobView

    now = datetime.now(UTC)
    job = {"target": X86, "arch": "amd64", "queue": "crossfarm.builds.amd64",
           "state": "succeeded", "attempt": 1, "queued_at": now, "started_at": now,
           "finished_at": now}
    return BuildView(build_id="b-" + "a" * 24, state=BuildState.SUCCEEDED, created_at=now,
                     source=DIGEST, cargo={}, jobs=[
                         JobView(job_id="j-" + "b" * 24, **job),
                         JobView(job_id="j-" + "c" * 24, **job)])


def test_result_cache_hits_and_misses_are_counted_per_lookup():
    metrics = FarmMetrics()
    view = _ended_build()
    metrics.submitted(view, "acme", [True, False])
    text = Scrape(metrics.exposition().decode())
    assert text[("crossfarm_result_cache_lookups_total", {"result": "hit"})] == 1
    assert text[("crossfarm_result_cache_lookups_total", {"result": "miss"})] == 1
    # born ended (served from the cache): it finished as it was submitted
    assert text[("crossfarm_builds_finished_total", {"state": "succeeded", "tenant": "acme"})] == 1


def test_unended_jobs_and_each_queues_backlog_are_read_at_scrape_time(api):
    farm = api.farm
    _worker(farm, "w1")
    first = submit_build(farm, BuildRequest(source=DIGEST, targets=[X86]), "acme")
    submit_build(farm, BuildRequest(source=DIGEST, targets=[X86, ARM]), "bolt")
    _start(farm, first.jobs[0].job_id)
    queued = [j.view for j in farm.store.jobs.queued()]
    now = datetime.now(UTC) + timedelta(seconds=30)
    scrape = _scrape(farm, now)
    assert scrape[("crossfarm_jobs", {"state": "running", "arch": "amd64", "mode": "native",
                                      "tenant": "acme"})] == 1
    assert scrape[("crossfarm_jobs", {"state": "queued", "arch": "amd64", "mode": "native",
                                      "tenant": "bolt"})] == 1
    assert scrape[("crossfarm_jobs", {"state": "queued", "arch": "arm64", "mode": "native",
                                      "tenant": "bolt"})] == 1
    for job in queued:
        assert scrape[("crossfarm_queue_depth", {"queue": job.queue.name})] == 1
        assert scrape[("crossfarm_queue_oldest_wait_seconds", {"queue": job.queue.name})] == \
            pytest.approx((now - job.queued_at).total_seconds())
    # a queue some worker serves and nothing waits on reads 0, not absent
    assert {"queue": "crossfarm.builds.arm64.cross"} in scrape.labelled("crossfarm_queue_depth")
    assert scrape[("crossfarm_queue_depth", {"queue": "crossfarm.builds.arm64.cross"})] == 0


def test_workers_are_counted_by_arch_and_state_with_their_slots_and_running_jobs(api):
    farm = api.farm
    _worker(farm, "w1", concurrency=2, running=["j-1-1"], warm=["k1", "k2"])
    _worker(farm, "w2", concurrency=4, draining=True)
    _worker(farm, "a1", arch="arm64", concurrency=1)
    scrape = _scrape(farm)
    assert scrape[("crossfarm_workers", {"arch": "amd64", "state": "online"})] == 1
    assert scrape[("crossfarm_workers", {"arch": "amd64", "state": "drained"})] == 1
    assert scrape[("crossfarm_workers", {"arch": "amd64", "state": "lost"})] == 0
    assert scrape[("crossfarm_workers", {"arch": "arm64", "state": "online"})] == 1
    # only online workers offer slots
    assert scrape[("crossfarm_worker_slots", {"arch": "amd64"})] == 2
    assert scrape[("crossfarm_worker_slots", {"arch": "arm64"})] == 1
    assert scrape[("crossfarm_worker_running_jobs", {"arch": "amd64"})] == 1
    assert scrape[("crossfarm_worker_warm_dirs", {"arch": "amd64"})] == 2
    later = _scrape(farm, datetime.now(UTC) + timedelta(seconds=farm.settings.lost_after_s + 1))
    assert later[("crossfarm_workers", {"arch": "amd64", "state": "lost"})] == 2
    assert later[("crossfarm_worker_slots", {"arch": "amd64"})] == 0


def test_source_bytes_received_and_submitted_give_the_dedup_ratio(api):
    farm = api.farm
    farm.counters.pack(600, {"a" * 64: 1000, "b" * 64: 500})
    farm.counters.tree(6000)
    farm.counters.tree(6000)  # the same tree again: nothing sent
    scrape = _scrape(farm)
    assert scrape[("crossfarm_source_received_bytes_total", {})] == 1500
    assert scrape[("crossfarm_source_pack_bytes_total", {})] == 600
    assert scrape[("crossfarm_source_tree_bytes_total", {})] == 12000
    assert scrape[("crossfarm_source_blobs_received_total", {})] == 2


def test_request_latency_is_labelled_by_route_template_never_by_an_id(api):
    api.get("/v1/builds/b-" + "a" * 24)
    api.get("/v1/builds/b-" + "b" * 24)
    api.get("/no/such/path")
    scrape = Scrape(api.get("/metrics").text)
    name = "crossfarm_http_request_duration_seconds_count"
    counts = {(labels["method"], labels["route"], labels["status"]): scrape[(name, labels)]
              for labels in scrape.labelled(name)}
    assert counts[("GET", "/v1/builds/{build_id}", "404")] == 2
    assert counts[("GET", "unmatched", "404")] == 1
    assert not [route for _, route, _ in counts if "b-aaaa" in route]


def test_metrics_need_the_metrics_token_once_one_is_set(tmp_path):
    api = make_api(tmp_path, metrics_token="scrape-token-1")
    refused = api.get("/metrics")
    assert refused.status_code == 401
    assert "CROSSFARM_METRICS_TOKEN" in refused.json()["detail"]
    assert api.get("/metrics", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    scraped = api.get("/metrics", headers={"Authorization": "Bearer scrape-token-1"})
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")


def test_every_expression_of_the_grafana_dashboard_names_metrics_the_controller_exposes(api):
    farm = api.farm
    _worker(farm, "w1")
    build = submit_build(farm, BuildRequest(source=DIGEST, targets=[X86]), "acme")
    _start(farm, build.jobs[0].job_id)
    jobs.finish(farm, build.jobs[0].job_id, 1, Outcome(state=BuildState.SUCCEEDED))
    farm.metrics.submitted(build, "acme", [True, False])
    farm.metrics.sent(build.jobs[0], affinity=True)
    api.get("/healthz")
    exposed = Scrape(api.get("/metrics").text).names()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"]
             for target in panel.get("targets", [])]
    assert len(exprs) >= 10
    for expr in exprs:
        named = set(re.findall(r"\bcrossfarm_[a-z0-9_]+", expr))
        assert named, f"{expr!r} names no crossfarm metric"
        assert named <= exposed, f"{expr!r} names {sorted(named - exposed)}, not exposed"
