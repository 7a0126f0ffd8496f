"""The worker's /healthz and /readyz, served over real HTTP on a loopback port."""

import httpx
import pytest

from crossfarm.shared.errors import StorageError
from crossfarm.shared.health import Check, Readiness
from crossfarm.worker.health import HealthServer, Pulse
from crossfarm.worker.settings import WorkerSettings


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _s3_down():
    raise StorageError("s3: could not connect to the endpoint URL http://127.0.0.1:9")


@pytest.fixture
def served():
    servers = []

    def serve(checks, pulse=None):
        server = HealthServer("127.0.0.1", 0, Readiness(checks), pulse or Pulse(), within_s=30)
        server.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield serve
    for server in servers:
        server.stop()


def test_a_worker_whose_dependencies_answer_is_ready(served):
    url = served([Check("redis", lambda: True), Check("docker", lambda: None)])
    reply = httpx.get(f"{url}/readyz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ready", "checks": {"redis": "ok", "docker": "ok"}}
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}


def test_readyz_names_the_object_store_when_it_does_not_answer(served):
    url = served([Check("redis", lambda: True), Check("s3", _s3_down)])
    reply = httpx.get(f"{url}/readyz")
    assert reply.status_code == 503
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["failing"] == ["s3"]


def test_healthz_fails_once_the_heartbeat_thread_stops_beating(served):
    clock = Clock()
    pulse = Pulse(startup_s=300, clock=clock)
    url = served([], pulse)
    clock.now += 299  # still starting: Celery boots, leftovers are reaped
    assert httpx.get(f"{url}/healthz").status_code == 200
    clock.now += 2
    assert httpx.get(f"{url}/healthz").status_code == 503
    pulse.beat()
    assert httpx.get(f"{url}/healthz").status_code == 200
    clock.now += 31
    stopped = httpx.get(f"{url}/healthz")
    assert stopped.status_code == 503
    assert "restart this worker" in stopped.json()["detail"]


def test_other_paths_are_not_found(served):
    url = served([])
    assert httpx.get(f"{url}/metrics").status_code == 404


def test_the_health_port_defaults_to_8701_on_loopback_and_0_turns_it_off(monkeypatch):
    settings = WorkerSettings()
    assert (settings.health_host, settings.health_port) == ("127.0.0.1", 8701)
    monkeypatch.setenv("CROSSFARM_HEALTH_PORT", "0")
    assert WorkerSettings().health_port == 0


def test_a_health_port_already_taken_stops_the_worker_saying_what_to_change(served):
    from crossfarm.worker.app import serve_health

    url = served([])
    taken = int(url.rsplit(":", 1)[1])
    with pytest.raises(SystemExit, match="CROSSFARM_HEALTH_PORT to a free port"):
        serve_health(WorkerSettings(health_port=taken), Pulse())
