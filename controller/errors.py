"""The one place HTTP status codes are chosen, and the one shape every error answers in:
an RFC 9457 problem document (`application/problem+json`, docs/errors.md).

    crossfarm's error tree (shared/errors.py)  → status by kind, `type` from the class name
    HTTPException (deps, routing's 404/405)    → its status, `type` from the status phrase
    RequestValidationError (FastAPI)           → 422 invalid-request, `errors` without values
    anything else                              → 500 internal-error, nothing of the exception

A problem never carries a request's values back: at most a short, escaped excerpt of one
(a field name, a path), so an 80 MiB body cannot come back in its own refusal and a lone
surrogate cannot break the response's encoding.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from crossfarm.shared.errors import (
    BrokerError,
    Conflict,
    CrossfarmError,
    Forbidden,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    QuotaExceeded,
    StorageError,
    TooLarge,
    Unauthenticated,
)
from crossfarm.shared.wire import FieldProblem, Problem

log = logging.getLogger(__name__)

#: Problem types are this plus the kind: identifiers to compare, documented in
#: docs/errors.md (they need not resolve to a page).
TYPE_BASE = "https://crossfarm.dev/problems/"
MEDIA_TYPE = "application/problem+json"

_STATUS: list[tuple[type[CrossfarmError], int]] = [
    (TooLarge, 413),
    (InvalidRequest, 422),
    (NotFound, 404),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (QuotaExceeded, 429),
    (Conflict, 409),
    (LimitExceeded, 413),
    (StorageError, 503),
    (BrokerError, 503),
]
#: How much of one echoed value (a field name, a path) a problem may carry.
EXCERPT_CHARS = 100
_DETAIL_CHARS = 2_000
_MAX_FIELD_ERRORS = 20
#: Members a problem's own fields own; an error's attribute of that name is not copied.
_RESERVED = frozenset(Problem.model_fields) | {"message", "instance"}


def status_for(exc: CrossfarmError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def kind_of(exc: CrossfarmError) -> str:
    """The problem kind of an error: its class name in kebab case (NotFound → not-found)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", type(exc).__name__).lower()


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` safe to echo: characters that are not printable (controls, bidi overrides,
    lone surrogates) escaped as `\\uXXXX`, then cut to `limit` characters with a marker."""
    escaped = "".join(
        char if char.isprintable() and not "\ud800" <= char <= "\udfff"
        else f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"
        for char in text[: limit + 1]
    )
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"


def _safe(value: object) -> object:
    """A field's value as JSON with every string an excerpt (fields may be user input)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return excerpt(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_safe(item) for item in list(value)[:50]]
    if isinstance(value, Mapping):
        return {excerpt(str(k)): _safe(v) for k, v in list(value.items())[:50]}
    return excerpt(str(value))


def problem(status: int, kind: str, detail: str, title: str | None = None,
            fields: Mapping[str, object] | None = None) -> Problem:
    """A problem document of `kind`; `fields` become members beside the standard ones."""
    title = title or kind.replace("-", " ").capitalize()
    extra = {name: _safe(value) for name, value in (fields or {}).items()
             if name not in _RESERVED}
    return Problem.model_validate({"type": TYPE_BASE + kind, "title": title, "status": status,
                                   "detail": excerpt(detail, _DETAIL_CHARS), **extra})


def problem_response(doc: Problem, headers: Mapping[str, str] | None = None
                     ) -> ProblemResponse:
    return ProblemResponse(status_code=doc.status, headers=headers,
                           content=doc.model_dump(mode="json", exclude_none=True))


def error_problem(exc: CrossfarmError) -> Problem:
    """The problem document of one of crossfarm's own errors, with the fields it carries."""
    fields = {k: v for k, v in vars(exc).items() if not k.startswith("_")}
    return problem(status_for(exc), kind_of(exc), exc.message, fields=fields)


def response_for(exc: CrossfarmError) -> ProblemResponse:
    """The response to an error: what a middleware that refuses a request early (a body
    over its limit) answers, exactly as a route would."""
    return problem_response(error_problem(exc), headers=_headers(exc))


async def _crossfarm_error(_request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, CrossfarmError)
    return response_for(exc)


def _headers(exc: CrossfarmError) -> dict[str, str]:
    """What a client needs beside the body: when to retry, how to authenticate."""
    if isinstance(exc, QuotaExceeded):
        return {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, Unauthenticated):
        return {"WWW-Authenticate": "Bearer"}
    return {}


#: Plain statuses whose kind is one of the tree's, so a client compares one `type`.
_HTTP_KINDS = {422: ("invalid-request", "Invalid request"),
               413: ("limit-exceeded", "Limit exceeded")}


def _http_kind(status: int) -> tuple[str, str]:
    if status in _HTTP_KINDS:
        return _HTTP_KINDS[status]
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = f"HTTP {status}"
    return re.sub(r"[^a-z0-9]+", "-", phrase.lower()).strip("-"), phrase


async def _http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, HTTPException)
    kind, phrase = _http_kind(exc.status_code)
    detail = exc.detail if isinstance(exc.detail, str) else phrase
    if exc.status_code == 404 and detail == phrase:  # routing: no such path
        detail = (f"no route {excerpt(request.method, 20)} {excerpt(request.url.path)}; "
                  "see /docs for the API")
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"{excerpt(request.method, 20)} is not allowed here; this path allows {allowed}"
    return problem_response(problem(exc.status_code, kind, detail, title=phrase),
                            headers=exc.headers)


def field_problems(errors: list[Any]) -> list[FieldProblem]:
    """FastAPI's validation errors without their `input` and `ctx` (which hold the values
    sent), every location part and message an excerpt."""
    found = []
    for error in errors[:_MAX_FIELD_ERRORS]:
        msg = str(error.get("msg", "invalid"))
        if error.get("type") == "json_invalid" and isinstance(error.get("ctx"), dict):
            msg = f"{msg}: {error['ctx'].get('error', '')}"  # the decoder's reason, no input
        loc = [part if isinstance(part, int) else excerpt(str(part))
               for part in error.get("loc", ())]
        found.append(FieldProblem(loc=loc, msg=excerpt(msg, 300),
                                  type=excerpt(str(error.get("type", "invalid")))))
    return found


async def _validation_error(_request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    found = field_problems(errors)
    said = "; ".join(f"{'.'.join(str(p) for p in f.loc)}: {f.msg}" for f in found[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    detail = f"the request does not match the API: {said}{more}; fix it and send it again"
    doc = problem(422, "invalid-request", detail, title="Invalid request")
    return problem_response(doc.model_copy(update={"errors": found}))


async def _unexpected(_request: Request, exc: Exception) -> ProblemResponse:
    # Starlette logs the exception after this answer; the client learns nothing of it.
    return problem_response(problem(
        500, "internal-error", "the controller failed on this request; the operator finds "
        "why in its log. Retry later, or report it if it persists"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(CrossfarmError, _crossfarm_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that may answer these error statuses, each a Problem."""
    return {status: {"description": _DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
                     "content": {MEDIA_TYPE: {"schema": _PROBLEM_REF}}}
            for status in statuses}


_DESCRIPTIONS = {
    400: "The body is not a JSON document (not UTF-8, or cut short)",
    401: "No token, or a wrong, revoked or expired one",
    403: "The token's role does not allow this",
    404: "No such object (or not the caller's tenant's)",
    409: "The request clashes with the object's current state",
    413: "The request, or something in it, is over the farm's limit",
    422: "The request does not match the API; `errors` names each field",
    429: "Over a quota; retry after `Retry-After` seconds",
    503: "The object store or the broker is unavailable; retrying may help",
}


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI schema (FastAPI's) with one error shape: every 4xx/5xx answers a Problem
    as `application/problem+json`, FastAPI's own 422 model included."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    add_component(schema, Problem)
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for status, answer in operation.get("responses", {}).items():
                if str(status)[0] in "45":
                    answer["content"] = {MEDIA_TYPE: {"schema": _PROBLEM_REF}}
                    if answer.get("description") == "Validation Error":
                        answer["description"] = _DESCRIPTIONS[422]
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def add_component(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Put `model` (and the models it uses) in the schema's components."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components[model.__name__] = model.model_json_schema(
        ref_template="#/components/schemas/{model}")
    components.update(components[model.__name__].pop("$defs", {}))
