"""The worker's own /healthz and /readyz, for its supervisor (a Kubernetes probe, compose's
healthcheck), served from its main process on CROSSFARM_HEALTH_HOST:CROSSFARM_HEALTH_PORT
(127.0.0.1:8701 by default; 0 turns it off). The contract is shared/health.py's.

    /healthz  the process runs and its heartbeat thread has beaten within three
              intervals (a worker whose heartbeat stopped is lost to the farm, so a
              restart is the cure)
    /readyz   Redis (the broker), the Docker engine and the object store each answer

The worker's figures for Prometheus travel in its heartbeats and are exposed by the
controller's /metrics (controller/gauges.py says why), so there is no /metrics here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from crossfarm.shared.errors import BrokerError
from crossfarm.shared.events import Events
from crossfarm.shared.health import Check, Readiness
from crossfarm.shared.storage import S3Store
from crossfarm.worker.container import Docker
from crossfarm.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

#: The key the object-store check asks about; nothing ever writes it.
PROBE_KEY = "crossfarm-readyz-probe"


class Pulse:
    """When the heartbeat thread last ran its chores: it is the worker's lease, so a
    worker whose thread stopped must fail its liveness probe. Before its first round
    (Celery is still starting, leftovers are being reaped) it has `startup_s` of grace."""

    def __init__(self, startup_s: float = 300,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._born = clock()
        self._startup_s = startup_s
        self._last: float | None = None

    def beat(self) -> None:
        self._last = self._clock()

    def alive(self, within_s: float) -> bool:
        if self._last is None:
            return self._clock() - self._born <= self._startup_s
        return self._clock() - self._last <= within_s


def readiness(settings: WorkerSettings) -> Readiness:
    """Its own clients: a probe must never wait on a build's connection."""
    events = Events(settings.redis_url)
    storage = S3Store(settings.storage())

    def redis() -> None:
        if not events.ping():
            raise BrokerError("redis answered the PING with something else than PONG")

    def docker() -> None:
        engine = Docker()
        try:
            engine.ping()
        finally:
            engine.close()

    return Readiness([Check("redis", redis), Check("docker", docker),
                      Check("s3", lambda: storage.exists(PROBE_KEY))])


class HealthServer:
    """A small HTTP server in a daemon thread; `start` raises OSError if the port is taken."""

    def __init__(self, host: str, port: int, ready: Readiness, pulse: Pulse,
                 within_s: float) -> None:
        self._ready, self._pulse, self._within_s = ready, pulse, within_s
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body, kind = outer.answer(self.path.split("?", 1)[0])
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass  # a probe every few seconds: its lines would bury the worker's log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]

    def answer(self, path: str) -> tuple[int, dict[str, object], str]:
        """(status, JSON body, content type) of a GET of `path`."""
        if path == "/healthz":
            if self._pulse.alive(self._within_s):
                return 200, {"status": "ok"}, "application/json"
            return 503, {"type": "https://crossfarm.dev/problems/not-alive",
                         "title": "Not alive", "status": 503,
                         "detail": f"the heartbeat thread has not run for over "
                                   f"{self._within_s:g} s; restart this worker"
                         }, "application/problem+json"
        if path == "/readyz":
            verdicts = self._ready.verdicts()
            if verdicts.ready:
                return 200, verdicts.body(), "application/json"
            return 503, verdicts.body(), "application/problem+json"
        return 404, {"type": "about:blank", "title": "Not Found", "status": 404,
                     "detail": "this worker serves /healthz and /readyz only"
                     }, "application/problem+json"

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, name="crossfarm-health",
                         daemon=True).start()
        log.info("health endpoints on http://%s:%d/healthz and /readyz",
                 *self._server.server_address[:2])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
