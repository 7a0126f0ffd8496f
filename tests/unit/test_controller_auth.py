"""Tokens on the API: with none configured and none issued the single-machine farm is
open; otherwise every request names its principal with a bearer token (a configured
client or operator token, or one an operator issued), roles are enforced, and workers
present the worker token. Real routes and a real SQLite store through FastAPI's
TestClient; the broker, events and object store are the unit tier's fakes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from farm_fakes import make_api

from crossfarm.controller import auth
from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store.tokens import TOUCH_EVERY
from crossfarm.shared.wire import Role, WorkerHeartbeat

BEAT = WorkerHeartbeat(
    hostname="w1", arch="amd64", queues={"crossfarm.builds.amd64": "native"}, cpus=2,
    memory_bytes=2**30, builder_image="crossfarm/builder:1",
    targets=["x86_64-unknown-linux-gnu"], version="0", concurrency=1,
).model_dump_json()
TOKENS = {"worker_token": "w-secret", "operator_token": "op-secret"}


@pytest.fixture
def client(tmp_path):
    made = []

    def make(**settings):
        api = make_api(tmp_path, **settings)
        made.append(api)
        return api

    yield make
    for api in made:
        api.farm.store.close()


def _bearer(token):
    return {"Authorization": f"Bearer {token}"} if token else {}


def _beat(api, token=None):
    return api.post("/v1/workers/w1/heartbeat", content=BEAT,
                    headers={"Content-Type": "application/json", **_bearer(token)})


def _issue(api, tenant="acme", role="submit", **fields):
    reply = api.post("/v1/admin/tokens", json={"tenant": tenant, "role": role, **fields},
                     headers=_bearer("op-secret"))
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_with_no_token_at_all_the_farm_is_open_to_everyone_as_its_operator(client):
    api = client()
    assert _beat(api).status_code == 200
    assert api.post("/v1/workers/w1/drain").status_code == 200
    assert api.delete("/v1/workers/w1/drain").status_code == 200
    assert api.get("/v1/builds").json() == []
    assert api.get("/v1/admin/tokens").json() == []


def test_a_worker_token_is_required_on_heartbeats_once_set(client):
    api = client(worker_token="w-secret")
    assert _beat(api).status_code == 401
    wrong = _beat(api, "wrong")
    assert wrong.json()["detail"] == "worker token missing or wrong"
    assert wrong.headers["WWW-Authenticate"] == "Bearer"
    assert _beat(api, "w-secret").status_code == 200


def test_worker_endpoints_are_closed_without_a_worker_token_once_clients_need_tokens(client):
    api = client(client_token="cl-secret")
    refused = _beat(api)
    assert refused.status_code == 401
    assert "CROSSFARM_WORKER_TOKEN" in refused.json()["detail"]
    assert _beat(api, "cl-secret").status_code == 401  # a client's token is not a worker's


def test_the_controller_refuses_to_start_with_client_tokens_but_no_worker_token(client):
    for configured in ("client_token", "operator_token"):
        settings = ControllerSettings(**{configured: "some-secret"})
        problem = auth.settings_problem(settings)
        assert problem is not None
        assert "CROSSFARM_WORKER_TOKEN" in problem
        with pytest.raises(RuntimeError, match="CROSSFARM_WORKER_TOKEN"):
            auth.check_start(settings, client().farm.store.tokens)
    assert auth.settings_problem(ControllerSettings()) is None  # the loopback-open farm


def test_the_controller_refuses_to_start_without_a_worker_token_once_tokens_were_issued(client):
    api = client(**TOKENS)
    _issue(api)
    open_settings = ControllerSettings(database_url=api.farm.settings.database_url)
    with pytest.raises(RuntimeError, match="tokens were issued"):
        auth.check_start(open_settings, api.farm.store.tokens)


def test_an_operator_role_is_required_to_drain(client):
    api = client(client_token="cl-secret", **TOKENS)
    assert _beat(api, "w-secret").status_code == 200
    assert api.post("/v1/workers/w1/drain").status_code == 401
    # the worker's token is no principal; the client token's role is too weak
    assert api.post("/v1/workers/w1/drain", headers=_bearer("w-secret")).status_code == 401
    weak = api.post("/v1/workers/w1/drain", headers=_bearer("cl-secret"))
    assert weak.status_code == 403
    assert weak.json()["detail"] == "a submit token cannot do this: it needs the operator role"
    ok = _bearer("op-secret")
    assert api.post("/v1/workers/w1/drain", headers=ok).json()["drain_requested"] is True
    assert api.delete("/v1/workers/w1/drain", headers=ok).status_code == 200


def test_a_token_is_required_on_builds_sources_and_the_fleet_once_any_is_set(client):
    api = client(client_token="cl-secret", **TOKENS)
    reads = ["/v1/builds", "/v1/workers", "/v1/stats", "/v1/sources/limits",
             "/v1/builds/b-0000000000000000/artifacts"]
    for path in reads:
        refused = api.get(path)
        assert refused.status_code == 401, path
        assert refused.json()["detail"].startswith("this farm needs a token: set `token`")
        wrong = api.get(path, headers=_bearer("cl-secreT"))
        assert wrong.status_code == 401, path
        assert "not one this farm issued" in wrong.json()["detail"]
        assert api.get(path, headers=_bearer("w-secret")).status_code == 401, path
    assert api.get("/v1/builds", headers=_bearer("cl-secret")).json() == []
    assert api.get("/v1/workers", headers=_bearer("op-secret")).status_code == 200
    # Writes are refused before their body is even looked at; with the token, the body is.
    for path in ["/v1/builds", "/v1/sources", "/v1/blobs/missing", "/v1/blobs/packs"]:
        assert api.post(path, content=b"{}").status_code == 401, path
        assert api.post(path, content=b"{", headers=_bearer("cl-secret")).status_code in (
            400, 422), path
    assert api.get("/v1/health").status_code == 200  # probes need no token


def test_the_farms_source_limits_are_read_with_any_token(client):
    api = client(client_token="cl-secret", max_source_files=7, max_file_bytes=4096,
                 max_source_bytes=8192, **TOKENS)
    limits = api.get("/v1/sources/limits", headers=_bearer("cl-secret")).json()
    assert limits == {"max_files": 7, "max_file_bytes": 4096, "max_total_bytes": 8192}


def test_an_operator_token_alone_closes_the_farm_to_anonymous_clients(client):
    api = client(**TOKENS)
    assert api.get("/v1/builds").status_code == 401
    assert api.get("/v1/builds", headers=_bearer("op-secret")).json() == []


def test_an_issued_token_is_shown_once_and_listed_without_its_secret(client):
    api = client(**TOKENS)
    issued = _issue(api, tenant="acme", role="read", name="ci", expires="90d")
    assert len(issued["token"]) >= 43
    view = issued["view"]
    assert (view["tenant"], view["role"], view["name"]) == ("acme", "read", "ci")
    created = datetime.fromisoformat(view["created_at"])
    assert datetime.fromisoformat(view["expires_at"]) - created == timedelta(days=90)
    listed = api.get("/v1/admin/tokens", headers=_bearer("op-secret"))
    assert listed.json() == [view]
    assert issued["token"] not in listed.text
    stored = api.farm.store.tokens.all()[0]
    assert stored.name == "ci"
    assert issued["token"] not in repr(stored)
    # the same request under another name is another token (under the same, a 409: below)
    assert _issue(api, tenant="acme", role="read", name="ci-2")["token"] != issued["token"]


def test_a_token_without_a_name_is_named_by_its_id(client):
    api = client(**TOKENS)
    issued = _issue(api)
    assert issued["view"]["name"] == f"token-{issued['view']['id']}"


def test_issuing_a_token_on_a_farm_without_a_worker_token_is_refused(client):
    api = client()
    refused = api.post("/v1/admin/tokens", json={"tenant": "acme"})
    assert refused.status_code == 409
    assert "CROSSFARM_WORKER_TOKEN" in refused.json()["detail"]
    assert api.farm.store.tokens.all() == []


@pytest.mark.parametrize("body", [{"tenant": "a@b"}, {"tenant": ""}, {"tenant": "acme",
                                  "role": "root"}, {"tenant": "acme", "expires": "90y"},
                                  {"tenant": "acme", "expires": "0d"}])
def test_a_token_request_with_a_bad_field_is_refused(client, body):
    api = client(**TOKENS)
    assert api.post("/v1/admin/tokens", json=body,
                    headers=_bearer("op-secret")).status_code == 422


def test_a_revoked_token_is_refused_saying_so(client):
    api = client(**TOKENS)
    issued = _issue(api, name="laptop")
    assert api.get("/v1/builds", headers=_bearer(issued["token"])).status_code == 200
    revoked = api.delete(f"/v1/admin/tokens/{issued['view']['id']}",
                         headers=_bearer("op-secret"))
    assert revoked.json()["revoked_at"] is not None
    refused = api.get("/v1/builds", headers=_bearer(issued["token"]))
    assert refused.status_code == 401
    assert refused.json()["detail"].startswith("the token 'laptop' was revoked at")
    assert api.delete("/v1/admin/tokens/999", headers=_bearer("op-secret")).status_code == 404


def test_an_expired_token_is_refused_saying_so(client):
    api = client(**TOKENS)
    issued = _issue(api, name="short", expires="1s")
    later = datetime.now(UTC) + timedelta(seconds=2)
    with pytest.raises(Exception, match="the token 'short' expired at"):
        auth.authenticate(api.farm, issued["token"], at=later)


def test_roles_nest_read_below_submit_below_operator(client):
    api = client(**TOKENS)
    reader = _bearer(_issue(api, role="read")["token"])
    submitter = _bearer(_issue(api, role="submit")["token"])
    operator = _bearer(_issue(api, role="operator")["token"])
    assert api.get("/v1/builds", headers=reader).status_code == 200
    assert api.post("/v1/blobs/missing", json={"digests": []}, headers=reader).status_code == 403
    assert api.post("/v1/builds", json={"source": "0" * 64, "targets": ["x"]},
                    headers=reader).status_code == 403
    assert api.post("/v1/blobs/missing", json={"digests": []},
                    headers=submitter).status_code == 200
    for headers, status in ((reader, 403), (submitter, 403), (operator, 200)):
        assert api.get("/v1/admin/tokens", headers=headers).status_code == status
        assert api.post("/v1/workers/nobody/drain", headers=headers).status_code in (
            status, 404)


def test_a_tokens_last_use_is_written_at_most_once_a_minute(client):
    api = client(**TOKENS)
    issued = _issue(api)
    start = datetime.now(UTC)
    for seconds in (0, 10, 50):
        auth.authenticate(api.farm, issued["token"], at=start + timedelta(seconds=seconds))
    assert api.farm.store.tokens.all()[0].last_used_at == start
    later = start + TOUCH_EVERY + timedelta(seconds=1)
    auth.authenticate(api.farm, issued["token"], at=later)
    assert api.farm.store.tokens.all()[0].last_used_at == later


def test_an_issued_token_acts_as_its_tenant_and_name(client):
    api = client(**TOKENS)
    issued = _issue(api, tenant="acme", role="read", name="ci")
    principal = auth.authenticate(api.farm, issued["token"])
    assert principal == auth.Principal("acme", Role.READ, "ci", issued["view"]["id"])
    assert principal.submitter == "ci@acme"
    assert principal.scope == "acme"
    assert auth.authenticate(api.farm, "op-secret").scope is None


@pytest.mark.parametrize("token", ["", "   ", "short", "has space in it"])
def test_a_blank_short_or_spaced_token_is_refused_at_start_up(token):
    for name in ("operator_token", "client_token"):
        with pytest.raises(ValueError, match=name):
            ControllerSettings(**{name: token})


def test_the_openapi_declares_a_bearer_scheme_on_client_routes():
    from fastapi import FastAPI

    from crossfarm.controller.api import admin, sources

    app = FastAPI()
    for module in (admin, sources):
        app.include_router(module.router)
    document = app.openapi()
    assert document["components"]["securitySchemes"]["token"] == {
        "type": "http", "scheme": "bearer", "description": document["components"][
            "securitySchemes"]["token"]["description"]}
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert all(op["security"] == [{"token": []}] for op in operations)


def test_a_tenant_cannot_have_two_tokens_of_one_name_even_once_one_is_revoked(client):
    api = client(**TOKENS)
    first = _issue(api, name="ci")
    _issue(api, tenant="globex", name="ci")  # another tenant's "ci" is another token
    again = api.post("/v1/admin/tokens", json={"tenant": "acme", "name": "ci"},
                     headers=_bearer("op-secret"))
    assert again.status_code == 409
    assert "already has a token named 'ci'" in again.json()["detail"]
    api.delete(f"/v1/admin/tokens/{first['view']['id']}", headers=_bearer("op-secret"))
    assert api.post("/v1/admin/tokens", json={"tenant": "acme", "name": "ci"},
                    headers=_bearer("op-secret")).status_code == 409
    assert _issue(api)["view"]["name"].startswith("token-")  # unnamed ones stay unique
    assert _issue(api)["view"]["name"].startswith("token-")
