import asyncio

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException

from crossfarm.controller.app import create_app
from crossfarm.controller.errors import EXCERPT_CHARS, excerpt, install, status_for
from crossfarm.controller.settings import ControllerSettings
from crossfarm.shared.errors import (
    BrokerError,
    BuildCancelled,
    BuildError,
    BuildTimeout,
    Conflict,
    CrossfarmError,
    IllegalTransition,
    InvalidCargoArgs,
    InvalidRequest,
    InvalidSource,
    LimitExceeded,
    NotFound,
    StorageError,
    UnsupportedTarget,
)
from crossfarm.shared.wire import SourceTree


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidRequest("bad"), 422),
        (UnsupportedTarget("riscv64gc-unknown-linux-gnu", ["x86_64-unknown-linux-gnu"]), 422),
        (InvalidCargoArgs("--release", "use crossfarm --release"), 422),
        (InvalidSource("too big", "src/huge.bin"), 422),
        (NotFound("no build b-0123456789abcdef"), 404),
        (Conflict("already finished"), 409),
        (IllegalTransition("succeeded", "running"), 409),
        (StorageError("S3 is down"), 503),
        (BrokerError("Redis is down"), 503),
        (LimitExceeded("body", "over", 10, "CROSSFARM_MAX_BODY_BYTES"), 413),
        (BuildError("cargo failed", exit_code=101), 500),
        (BuildTimeout("too slow"), 500),
        (BuildCancelled("cancelled"), 500),
        (CrossfarmError("unexpected"), 500),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_each_error_kind_maps_to_its_status(error, status):
    assert status_for(error) == status


def _response_to(error):
    """What a route that raises `error` answers, served in-process (no socket)."""
    app = FastAPI()
    install(app)

    @app.get("/boom")
    def boom():
        raise error

    async def get():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://farm") as client:
            return await client.get("/boom")

    return asyncio.run(get())


PROBLEM = "application/problem+json"
TYPE = "https://crossfarm.dev/problems/"


def test_an_error_response_is_a_problem_document_with_the_errors_fields():
    error = UnsupportedTarget("riscv64gc-unknown-linux-gnu", ["x86_64-unknown-linux-gnu"])
    response = _response_to(error)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json() == {
        "type": TYPE + "unsupported-target",
        "title": "Unsupported target",
        "status": 422,
        "detail": error.message,
        "target": "riscv64gc-unknown-linux-gnu",
        "supported": ["x86_64-unknown-linux-gnu"],
    }


def test_an_illegal_transition_response_is_a_conflict_with_both_states():
    response = _response_to(IllegalTransition("succeeded", "running"))
    assert response.status_code == 409
    assert response.json()["type"] == TYPE + "illegal-transition"
    assert (response.json()["current"], response.json()["new"]) == ("succeeded", "running")


def test_an_invalid_source_response_names_the_path():
    response = _response_to(InvalidSource("the path appears twice", "src/main.rs"))
    assert response.status_code == 422
    assert response.json() == {
        "type": TYPE + "invalid-source",
        "title": "Invalid source",
        "status": 422,
        "detail": "src/main.rs: the path appears twice",
        "path": "src/main.rs",
    }


def test_a_limit_exceeded_is_413_naming_the_limit_and_its_setting():
    error = LimitExceeded("body", "the request body is over 1048576 bytes", 1 << 20,
                          "CROSSFARM_MAX_BODY_BYTES")
    response = _response_to(error)
    assert response.status_code == 413
    body = response.json()
    assert body["type"] == TYPE + "limit-exceeded"
    assert (body["kind"], body["limit"], body["setting"]) == (
        "body", 1 << 20, "CROSSFARM_MAX_BODY_BYTES")
    assert "exit_code" not in body


def test_an_echoed_field_is_a_short_escaped_excerpt():
    response = _response_to(InvalidSource("bad name", "a\u202e" + "x" * 5000))
    path = response.json()["path"]
    assert len(path) == EXCERPT_CHARS
    assert path.startswith("a\\u202e")
    assert path.endswith("…")


def test_excerpt_escapes_controls_bidi_and_lone_surrogates():
    assert excerpt("a\x00b\x7f\u202e\udcffc") == "a\\u0000b\\u007f\\u202e\\udcffc"
    assert excerpt("ok ü 中") == "ok ü 中"
    assert excerpt("y" * 101) == "y" * 99 + "…"


def _app():
    app = FastAPI()
    install(app)

    def refuse(authorization: str | None = Header(None)):
        raise HTTPException(401, "client token missing or wrong; set `token`",
                            headers={"WWW-Authenticate": "Bearer"})

    @app.get("/guarded", dependencies=[Depends(refuse)])
    def guarded():
        return {}

    @app.post("/things")
    def things(thing: SourceTree):
        return {}

    @app.get("/crash")
    def crash():
        raise RuntimeError("secret internals /etc/passwd")

    return app


def _call(method, path, **kwargs):
    async def go():
        transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://farm") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def test_an_http_exception_from_a_dependency_is_a_problem_keeping_its_headers():
    response = _call("GET", "/guarded")
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"type": TYPE + "unauthorized", "title": "Unauthorized",
                               "status": 401,
                               "detail": "client token missing or wrong; set `token`"}


def test_an_unknown_route_and_a_wrong_method_are_problems():
    missing = _call("GET", "/nowhere")
    assert (missing.status_code, missing.headers["content-type"]) == (404, PROBLEM)
    assert missing.json()["type"] == TYPE + "not-found"
    assert "GET /nowhere" in missing.json()["detail"]
    wrong = _call("DELETE", "/things")
    assert (wrong.status_code, wrong.json()["type"]) == (405, TYPE + "method-not-allowed")
    assert wrong.headers["allow"] == "POST"
    assert "allows POST" in wrong.json()["detail"]


def test_a_validation_error_names_each_field_and_never_echoes_the_value():
    huge = "z" * (1 << 20)
    response = _call("POST", "/things", json={"entries": [{"path": "a", "kind": huge}]})
    assert (response.status_code, response.headers["content-type"]) == (422, PROBLEM)
    body = response.json()
    assert body["type"] == TYPE + "invalid-request"
    assert body["errors"][0]["loc"] == ["body", "entries", 0, "kind"]
    assert "body.entries.0.kind" in body["detail"]
    assert "input" not in body["errors"][0]
    assert len(response.content) < 2_000


def test_a_lone_surrogate_in_a_json_key_is_refused_not_a_server_error():
    response = _call("POST", "/things", content=b'{"x\\udcff": 1, "entries": []}',
                     headers={"Content-Type": "application/json"})
    assert (response.status_code, response.headers["content-type"]) == (422, PROBLEM)
    assert response.json()["type"] == TYPE + "invalid-request"


def test_malformed_json_is_refused_with_the_decoders_reason():
    response = _call("POST", "/things", content=b'{"entries": [',
                     headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["type"] == "json_invalid"


def test_an_unexpected_exception_is_a_500_problem_that_reveals_nothing():
    response = _call("GET", "/crash")
    assert (response.status_code, response.headers["content-type"]) == (500, PROBLEM)
    assert response.json()["type"] == TYPE + "internal-error"
    assert "passwd" not in response.text


def test_every_documented_error_of_the_api_is_a_problem_and_the_stream_is_sse():
    schema = create_app(ControllerSettings()).openapi()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert schema["components"]["schemas"]["Problem"]["additionalProperties"] is True
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if status[0] in "45":
                    assert answer["content"] == {PROBLEM: {"schema": {
                        "$ref": "#/components/schemas/Problem"}}}, (method, path, status)
    events = schema["paths"]["/v1/builds/{build_id}/events"]["get"]["responses"]["200"]
    assert list(events["content"]) == ["text/event-stream"]
    submit = schema["paths"]["/v1/builds"]["post"]["responses"]
    assert {"401", "404", "413", "422", "429"} <= set(submit)


def test_a_plain_422_has_the_same_kind_as_a_validation_problem():
    app = FastAPI()
    install(app)

    @app.get("/digest")
    def digest():
        raise HTTPException(422, "'xyz' is not a sha256 digest")

    async def get():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://farm") as client:
            return await client.get("/digest")

    assert asyncio.run(get()).json()["type"] == TYPE + "invalid-request"
