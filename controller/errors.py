"""The one place HTTP status codes are chosen: crossfarm's error tree → responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from crossfarm.shared.errors import (
    BrokerError,
    Conflict,
    CrossfarmError,
    InvalidRequest,
    NotFound,
    StorageError,
    TooLarge,
)
from crossfarm.shared.wire import ErrorBody

_STATUS: list[tuple[type[CrossfarmError], int]] = [
    (TooLarge, 413),
    (InvalidRequest, 422),
    (NotFound, 404),
    (Conflict, 409),
    (StorageError, 503),
    (BrokerError, 503),
]


def status_for(exc: CrossfarmError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def _fields(exc: CrossfarmError) -> dict[str, object]:
    return {k: v for k, v in vars(exc).items() if k != "message" and not k.startswith("_")}


async def _handle(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CrossfarmError)
    body = ErrorBody(error=type(exc).__name__, message=exc.message, fields=_fields(exc))
    return JSONResponse(status_code=status_for(exc), content=body.model_dump(mode="json"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(CrossfarmError, _handle)
