"""The controller's Prometheus instruments: what the use-cases count as it happens.

    counted here, as it happens            read at scrape time (controller/gauges.py)
    ─────────────────────────────         ──────────────────────────────────────────
    builds / jobs submitted, finished      unended jobs by state, arch, mode, tenant
    job duration, queue wait (histograms)  queue depth and oldest wait per queue
    result-cache lookups, jobs sent        workers by arch and state; slots and running
    API request latency                    source bytes received vs submitted (dedup)

Every instrument lives in this farm's own `CollectorRegistry`, made with the `Farm`
(never prometheus_client's process-global one), so two apps in one process (the tests)
never share a count. Counters start at zero with the process, as Prometheus expects;
`rate()` and `increase()` absorb a restart.

Labels are bounded: an architecture, a build mode, a state, a tenant (the operator issues
tenants), a queue (architecture x mode), a route template. Never a build, job or worker id.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.registry import Collector

from crossfarm.shared import keys
from crossfarm.shared.arch import BuildMode
from crossfarm.shared.wire import BuildView, JobView

#: Seconds: a hello-world cross build takes ~10 s, a large release build an hour or more.
DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
#: Seconds: an idle farm starts a job in under a second; a busy queue holds one for hours.
WAIT_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
#: Seconds: a status read answers in milliseconds, a pack upload or git fetch in seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

#: The content type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def job_mode(job: JobView) -> str:
    """The mode a job ran in, or its queue's while no worker started it."""
    return (job.mode or job.queue.mode or BuildMode.NATIVE).value


class FarmMetrics:
    """The instruments one controller process counts with, in their own registry."""

    #: Builds remembered as counted ended: two jobs of one build ending at once may each
    #: read the build ended (each reads after its own commit), and it must count once.
    ENDED_MEMORY = 10_000

    def __init__(self) -> None:
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.builds_submitted = Counter(
            "crossfarm_builds_submitted", "Builds accepted.", ["tenant"], registry=r)
        self.builds_finished = Counter(
            "crossfarm_builds_finished", "Builds whose last job ended, by the build's state.",
            ["state", "tenant"], registry=r)
        self.jobs_submitted = Counter(
            "crossfarm_jobs_submitted", "Jobs (one per target) accepted.",
            ["arch", "tenant"], registry=r)
        self.jobs_started = Counter(
            "crossfarm_jobs_started", "Job attempts a worker started.",
            ["arch", "mode", "tenant"], registry=r)
        self.jobs_finished = Counter(
            "crossfarm_jobs_finished", "Jobs that ended (a cache-served job is counted by "
            "crossfarm_result_cache_lookups_total instead).",
            ["state", "arch", "mode", "tenant"], registry=r)
        self.jobs_sent = Counter(
            "crossfarm_jobs_sent", "Job attempts sent to the broker; route=affinity: to the "
            "worker keeping the project's warm target dir.", ["arch", "route"], registry=r)
        self.job_duration = Histogram(
            "crossfarm_job_duration_seconds", "From a worker's start of a job to its end.",
            ["arch", "mode", "state"], buckets=DURATION_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            "crossfarm_job_queue_wait_seconds", "From a job's queueing to a worker's start "
            "of it (of a re-run: to the start of that attempt).",
            ["arch", "mode"], buckets=WAIT_BUCKETS, registry=r)
        self.cache_lookups = Counter(
            "crossfarm_result_cache_lookups", "Result-cache lookups of submitted jobs.",
            ["result"], registry=r)
        self.requests = Histogram(
            "crossfarm_http_request_duration_seconds", "API requests, from arrival to the "
            "response's first byte (an event stream counts until its headers).",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.scrape_failures = Counter(
            "crossfarm_scrape_failures", "Parts of a /metrics scrape that could not be read "
            "(the database did not answer); their series are left out of that scrape.",
            ["part"], registry=r)
        # Series an alert reads exist from the start at 0, not only after a first event.
        for part in ("jobs", "workers"):
            self.scrape_failures.labels(part)
        for result in ("hit", "miss"):
            self.cache_lookups.labels(result)

    def submitted(self, build: BuildView, tenant: str, lookups: Iterable[bool]) -> None:
        """A build was accepted; `lookups`: each result-cache lookup's hit (True) or miss."""
        self.builds_submitted.labels(tenant).inc()
        for job in build.jobs:
            self.jobs_submitted.labels(job.arch.value, tenant).inc()
        for hit in lookups:
            self.cache_lookups.labels("hit" if hit else "miss").inc()
        if build.state.terminal:  # every target served from the cache: it is born ended
            self._build_ended(build, tenant)

    def sent(self, job: JobView, affinity: bool) -> None:
        self.jobs_sent.labels(job.arch.value, "affinity" if affinity else "shared").inc()

    def started(self, job: JobView, tenant: str) -> None:
        mode = job_mode(job)
        self.jobs_started.labels(job.arch.value, mode, tenant).inc()
        if job.started_at is not None:
            wait = (job.started_at - job.queued_at).total_seconds()
            self.queue_wait.labels(job.arch.value, mode).observe(max(wait, 0.0))

    def finished(self, job: JobView, tenant: str, build: BuildView | None) -> None:
        """A job ended; `build`: its build as read after that end (ended if it was the
        last of its jobs)."""
        mode = job_mode(job)
        self.jobs_finished.labels(job.state.value, job.arch.value, mode, tenant).inc()
        if job.started_at is not None and job.finished_at is not None:
            took = (job.finished_at - job.started_at).total_seconds()
            self.job_duration.labels(job.arch.value, mode, job.state.value).observe(
                max(took, 0.0))
        if build is not None and build.state.terminal:
            self._build_ended(build, tenant)

    def _build_ended(self, build: BuildView, tenant: str) -> None:
        with self._lock:
            if build.build_id in self._ended:
                return
            self._ended[build.build_id] = None
            if len(self._ended) > self.ENDED_MEMORY:
                self._ended.popitem(last=False)
        self.builds_finished.labels(build.state.value, tenant).inc()

    def exposition(self, *more: Collector) -> bytes:
        """The text format of these instruments and of `more` (read at this scrape)."""
        return generate_latest(_Joined(self.registry, more))


class _Joined:
    """This scrape's collectors, without registering the scrape-time ones for good."""

    def __init__(self, registry: CollectorRegistry, more: tuple[Collector, ...]) -> None:
        self._registry, self._more = registry, more

    def collect(self) -> Iterable[Any]:
        yield from self._registry.collect()
        for collector in self._more:
            yield from collector.collect()


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestTimer:
    """ASGI middleware: observes each HTTP request in the farm's latency histogram, by
    method, route template (`/v1/builds/{build_id}`, never the id) and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._observe(scope, message["status"], time.perf_counter() - began)
            await send(message)

        await self.app(scope, receive, timed)

    @staticmethod
    def _observe(scope: Scope, status: int, seconds: float) -> None:
        farm = getattr(scope["app"].state, "farm", None)
        if farm is None:
            return
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        method = scope["method"] if scope["method"] in _METHODS else "other"
        farm.metrics.requests.labels(method, route, str(status)).observe(seconds)


def queue_mode(queue: str) -> str:
    """The build mode of a queue name from the record (native for one it cannot parse)."""
    try:
        return keys.QueueKey.parse(queue).mode.value
    except ValueError:
        return BuildMode.NATIVE.value
