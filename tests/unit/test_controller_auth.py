"""Tokens on the API: with none configured the single-machine farm is open; with one,
workers must present the worker token on their endpoints, operators the operator
token to drain, and clients the client token (or the operator's) for everything else.
Real routes and a real SQLite store; no broker, no object store."""

import asyncio

import httpx
import pytest

from crossfarm.controller.app import create_app
from crossfarm.controller.farm import Farm
from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store import Store
from crossfarm.shared.wire import WorkerHeartbeat

BEAT = WorkerHeartbeat(
    hostname="w1", arch="amd64", queues={"crossfarm.builds.amd64": "native"}, cpus=2,
    memory_bytes=2**30, builder_image="crossfarm/builder:1",
    targets=["x86_64-unknown-linux-gnu"], version="0", concurrency=1,
).model_dump_json()


class Api:
    """Requests straight into the ASGI app, no server (sync calls for readable tests)."""

    def __init__(self, app):
        self._app = app

    def __getattr__(self, method):
        async def call(*args, **kwargs):
            transport = httpx.ASGITransport(app=self._app)
            async with httpx.AsyncClient(transport=transport, base_url="http://farm") as c:
                return await getattr(c, method)(*args, **kwargs)

        return lambda *args, **kwargs: asyncio.run(call(*args, **kwargs))


class QueueDepths:
    def queue_depth(self, queue):
        return 0


@pytest.fixture
def client(tmp_path):
    def make(**tokens):
        settings = ControllerSettings(database_url=f"sqlite:///{tmp_path}/crossfarm.db",
                                      **tokens)
        store = Store(settings.database_url)
        app = create_app(settings)
        # The routes only: the lifespan (broker, object store, chores) is not started.
        app.state.farm = Farm(settings=settings, store=store, queue=None,
                              events=QueueDepths(), storage=None)
        made.append(store)
        return Api(app)

    made = []
    yield make
    for store in made:
        store.close()


def _beat(client, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return client.post("/v1/workers/w1/heartbeat", content=BEAT, headers=headers)


def test_with_no_tokens_set_workers_and_operators_need_none(client):
    api = client()
    assert _beat(api).status_code == 200
    assert api.post("/v1/workers/w1/drain").status_code == 200
    assert api.delete("/v1/workers/w1/drain").status_code == 200


def test_a_worker_token_is_required_on_heartbeats_once_set(client):
    api = client(worker_token="w-secret")
    assert _beat(api).status_code == 401
    assert _beat(api, "wrong").json()["detail"] == "worker token missing or wrong"
    assert _beat(api, "w-secret").status_code == 200


def test_an_operator_token_is_required_to_drain_once_set(client):
    api = client(worker_token="w-secret", operator_token="op-secret")
    assert _beat(api, "w-secret").status_code == 200
    refused = api.post("/v1/workers/w1/drain")
    assert refused.status_code == 401
    assert "operator" in refused.json()["detail"]
    # the worker's token is not the operator's
    assert api.post("/v1/workers/w1/drain",
                    headers={"Authorization": "Bearer w-secret"}).status_code == 401
    ok = {"Authorization": "Bearer op-secret"}
    assert api.post("/v1/workers/w1/drain", headers=ok).json()["drain_requested"] is True
    assert api.delete("/v1/workers/w1/drain", headers=ok).status_code == 200
    assert api.get("/v1/workers").status_code == 200  # reading the fleet stays open


def _bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_a_client_token_is_required_on_builds_sources_and_the_fleet_once_set(client):
    api = client(worker_token="w-secret", operator_token="op-secret",
                 client_token="cl-secret")
    reads = ["/v1/builds", "/v1/workers", "/v1/stats",
             "/v1/builds/b-00000000000000000000000000/artifacts"]
    for path in reads:
        refused = api.get(path)
        assert refused.status_code == 401, path
        assert refused.json()["detail"].startswith("client token missing or wrong; set `token`")
        # neither a wrong token nor the worker's opens them
        assert api.get(path, headers=_bearer("cl-secreT")).status_code == 401, path
        assert api.get(path, headers=_bearer("w-secret")).status_code == 401, path
    assert api.get("/v1/builds", headers=_bearer("cl-secret")).json() == []
    assert api.get("/v1/workers", headers=_bearer("op-secret")).status_code == 200
    # Writes are refused before their body is even looked at; with the token, the body is.
    for path in ["/v1/builds", "/v1/sources", "/v1/blobs/missing", "/v1/blobs/packs"]:
        assert api.post(path, content=b"{}").status_code == 401, path
        assert api.post(path, content=b"{", headers=_bearer("cl-secret")).status_code in (
            400, 422), path
    assert api.get("/v1/health").status_code == 200  # probes need no token
    # The client token is not the operator's: it cannot drain.
    assert api.post("/v1/workers/w1/drain", headers=_bearer("cl-secret")).status_code == 401


def test_the_farms_source_limits_are_read_with_the_client_token(client):
    api = client(client_token="cl-secret", max_source_files=7, max_file_bytes=4096,
                 max_source_bytes=8192)
    assert api.get("/v1/sources/limits").status_code == 401
    limits = api.get("/v1/sources/limits", headers=_bearer("cl-secret")).json()
    assert limits == {"max_files": 7, "max_file_bytes": 4096, "max_total_bytes": 8192}


def test_without_a_client_token_builds_stay_open_even_when_others_are_set(client):
    api = client(worker_token="w-secret", operator_token="op-secret")
    assert api.get("/v1/builds").json() == []


@pytest.mark.parametrize("token", ["", "   ", "short", "has space in it"])
def test_a_blank_short_or_spaced_token_is_refused_at_start_up(token):
    for name in ("operator_token", "client_token"):
        with pytest.raises(ValueError, match=name):
            ControllerSettings(**{name: token})
