"""The one place HTTP status codes are chosen: crossfarm's error tree → responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from crossfarm.shared.errors import (
    BrokerError,
    Conflict,
    CrossfarmError,
    Forbidden,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    StorageError,
    TooLarge,
    Unauthenticated,
)
from crossfarm.shared.wire import ErrorBody

_STATUS: list[tuple[type[CrossfarmError], int]] = [
    (TooLarge, 413),
    (InvalidRequest, 422),
    (NotFound, 404),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (QuotaExceeded, 429),
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
    return JSONResponse(status_code=status_for(exc), content=body.model_dump(mode="json"),
                        headers=_headers(exc))


def _headers(exc: CrossfarmError) -> dict[str, str]:
    """What a client needs beside the body: when to retry, how to authenticate."""
    if isinstance(exc, QuotaExceeded):
        return {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, Unauthenticated):
        return {"WWW-Authenticate": "Bearer"}
    return {}


def install(app: FastAPI) -> None:
    app.add_exception_handler(CrossfarmError, _handle)
