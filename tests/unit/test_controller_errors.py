import asyncio

import httpx
import pytest
from fastapi import FastAPI

from crossfarm.controller.errors import install, status_for
from crossfarm.shared.errors import (
    BuildCancelled,
    BuildError,
    BuildTimeout,
    Conflict,
    CrossfarmError,
    IllegalTransition,
    InvalidCargoArgs,
    InvalidRequest,
    InvalidSource,
    NotFound,
    StorageError,
    UnsupportedTarget,
)


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


def test_an_error_response_carries_the_error_name_message_and_fields():
    error = UnsupportedTarget("riscv64gc-unknown-linux-gnu", ["x86_64-unknown-linux-gnu"])
    response = _response_to(error)
    assert response.status_code == 422
    assert response.json() == {
        "error": "UnsupportedTarget",
        "message": error.message,
        "fields": {
            "target": "riscv64gc-unknown-linux-gnu",
            "supported": ["x86_64-unknown-linux-gnu"],
        },
    }


def test_an_illegal_transition_response_is_a_conflict_with_both_states():
    response = _response_to(IllegalTransition("succeeded", "running"))
    assert response.status_code == 409
    assert response.json()["fields"] == {"current": "succeeded", "new": "running"}


def test_an_invalid_source_response_names_the_path():
    response = _response_to(InvalidSource("the path appears twice", "src/main.rs"))
    assert response.status_code == 422
    assert response.json() == {
        "error": "InvalidSource",
        "message": "src/main.rs: the path appears twice",
        "fields": {"path": "src/main.rs"},
    }
