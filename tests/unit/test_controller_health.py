"""The controller's /healthz and /readyz, on the real app and store with fakes for Redis
and the object store."""

from farm_fakes import make_api

from crossfarm.shared.errors import BrokerError, StorageError


class DownStorage:
    def exists(self, key):
        raise StorageError("s3: could not connect to the endpoint URL")


def test_healthz_answers_ok_without_a_token_and_checks_nothing(tmp_path):
    api = make_api(tmp_path, operator_token="operator-token-1", worker_token="worker-token-1")
    api.farm.events.down = BrokerError("redis: down")
    reply = api.get("/healthz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok"}


def test_readyz_is_ready_when_the_database_redis_and_s3_answer(tmp_path):
    api = make_api(tmp_path, operator_token="operator-token-1", worker_token="worker-token-1")
    reply = api.get("/readyz")
    assert reply.status_code == 200
    assert reply.json()["checks"] == {"database": "ok", "redis": "ok", "s3": "ok"}


def test_readyz_names_redis_when_it_does_not_answer_and_recovers_when_it_does(tmp_path):
    api = make_api(tmp_path)
    api.farm.events.down = BrokerError("redis: Error 111 connecting to 127.0.0.1:6379.")
    reply = api.get("/readyz")
    assert reply.status_code == 503
    assert reply.headers["content-type"] == "application/problem+json"
    doc = reply.json()
    assert doc["type"] == "https://crossfarm.dev/problems/not-ready"
    assert doc["failing"] == ["redis"]
    assert doc["checks"]["database"] == "ok"
    api.farm.events.down = None
    assert api.get("/readyz").status_code == 200


def test_readyz_names_every_dependency_that_fails_at_once(tmp_path):
    api = make_api(tmp_path, storage=DownStorage())
    api.farm.events.down = BrokerError("redis: down")
    doc = api.get("/readyz").json()
    assert doc["failing"] == ["redis", "s3"]
    assert "could not connect" in doc["checks"]["s3"]


def test_readyz_and_metrics_are_in_the_openapi_with_their_answers(tmp_path):
    api = make_api(tmp_path)
    paths = api.get("/openapi.json").json()["paths"]
    assert "503" in paths["/readyz"]["get"]["responses"]
    assert {"/healthz", "/readyz", "/metrics"} <= set(paths)
