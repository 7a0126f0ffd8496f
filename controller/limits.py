"""Request bodies bounded before anything parses them.

Each route has a byte limit: blob and pack uploads their own settings, every other
route (JSON) `max_json_bytes`. A body whose Content-Length says it is too big is
refused before one byte of it is read; one without (chunked) is counted as it streams
and refused as soon as it passes the limit. A JSON body is also refused while still
bytes when it is not UTF-8, holds more values than `max_json_items`, nests deeper
than `MAX_JSON_DEPTH`, or holds a lone UTF-16 surrogate escape, which Python's json
accepts but no response, database or file name can encode.

The middleware sits inside the router, under the exception handlers, so its refusals
are ordinary errors of the error tree rendered in the one place statuses are chosen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crossfarm.controller.settings import ControllerSettings
from crossfarm.shared.errors import InvalidRequest, TooLarge

#: Our wire models nest a few levels; a deep body can only be an attack on the parser.
MAX_JSON_DEPTH = 32

_BLOB = re.compile(r"^/v1/blobs/[^/]+$")
# a string, or an unterminated one to the end; possessive, so that no match backtracks
_STRING = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.DOTALL)
# any escape, so that an escaped backslash is skipped whole
_ESCAPE = re.compile(rb"\\(?:u([dD][0-9a-fA-F]{3})|.)", re.DOTALL)
_PAIRS = (b"[]", b"{}")
#: Every byte but the brackets: what check_json deletes to see how a body nests.
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


@dataclass(frozen=True)
class Limit:
    """One route's bound: how many bytes, what to call the body, and the setting."""

    limit: int
    what: str
    setting: str
    json: bool


def limit_for(settings: ControllerSettings, method: str, path: str) -> Limit:
    if method == "POST" and path == "/v1/blobs/packs":
        return Limit(settings.max_pack_bytes, "a pack", "max_pack_bytes", json=False)
    if method == "PUT" and _BLOB.match(path):
        return Limit(settings.max_file_bytes, "a file", "max_file_bytes", json=False)
    return Limit(settings.max_json_bytes, "the request body", "max_json_bytes", json=True)


class BodyLimits:
    """ASGI middleware bounding every HTTP request body by its route's `Limit`."""

    def __init__(self, app: ASGIApp, settings: ControllerSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(self.settings, scope["method"], scope["path"])
        declared, chunked = _framing(scope)
        if declared is not None and declared > limit.limit:
            raise TooLarge(limit.what, limit.limit, limit.setting)
        if not declared and not chunked:
            # No body (a status read, a listing): nothing to bound, and an empty one passes
            # every check; reading, checking and replaying it was a status read's cost.
            await self.app(scope, receive, send)
            return
        if not limit.json:
            await self.app(scope, _Counted(receive, limit), send)
            return
        body = await _Counted(receive, limit).read_all()
        check_json(body, self.settings.max_json_items)
        await self.app(scope, _Replay(body, receive), send)


def install(app: FastAPI, settings: ControllerSettings) -> None:
    """Bound the bodies of every route of `app`, inside its exception handlers."""
    app.router.middleware_stack = BodyLimits(app.router.middleware_stack, settings)


def check_json(body: bytes, max_items: int) -> None:
    """Refuse, before parsing, a JSON body that would parse into too many objects, nest
    too deep, or carry a lone surrogate; malformed JSON is left to the parser."""
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        # json.loads would let UTF-8 encoded surrogates through, and FastAPI answers the
        # rest vaguely, or echoes the bytes in a validation error it cannot encode
        raise InvalidRequest(f"the request body is not valid UTF-8 (at byte {exc.start})") from None
    if _ESCAPE.search(body) and (where := lone_surrogate(body)) is not None:
        raise InvalidRequest(
            f"the JSON body holds a lone UTF-16 surrogate at byte {where}: strings must be "
            "valid Unicode (a \\ud800-\\udbff escape is always followed by a \\udc00-\\udfff one)"
        )
    shape = _STRING.sub(b"", body)
    items = shape.count(b",") + shape.count(b"[") + shape.count(b"{")
    if items > max_items:
        raise InvalidRequest(f"the JSON body holds more than {max_items} values "
                             "(the controller's max_json_items)")
    brackets = shape.translate(None, delete=_NOT_BRACKETS)
    for _ in range(MAX_JSON_DEPTH):
        if not brackets:
            return
        peeled = brackets
        for pair in _PAIRS:
            peeled = peeled.replace(pair, b"")
        if peeled == brackets:
            return  # unbalanced: not JSON, and the parser will say so
        brackets = peeled
    if brackets:
        raise InvalidRequest(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")


def lone_surrogate(body: bytes) -> int | None:
    """The offset of the first surrogate in a JSON text that is not half of a pair."""
    high_ends = -1  # where the last unpaired high surrogate escape ended
    high_at = 0
    for match in _ESCAPE.finditer(body):
        unit = match.group(1)
        low = unit is not None and unit[1:2] in b"cdefCDEF"
        high = unit is not None and unit[1:2] in b"89abAB"
        if high_ends >= 0:
            if low and match.start() == high_ends:
                high_ends = -1
                continue
            return high_at
        if low:
            return match.start()
        if high:
            high_ends, high_at = match.end(), match.start()
    return high_at if high_ends >= 0 else None


def _framing(scope: Scope) -> tuple[int | None, bool]:
    """The request's Content-Length, and whether it has a Transfer-Encoding (a body of
    unknown length: the server takes any as chunked or refuses it)."""
    length, chunked = None, False
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():  # (the server refuses others)
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


class _Counted:
    """The request's receive, refusing the body as soon as it passes the limit."""

    def __init__(self, receive: Receive, limit: Limit) -> None:
        self._receive = receive
        self._limit = limit
        self._seen = 0

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._seen += len(message.get("body", b""))
            if self._seen > self._limit.limit:
                raise TooLarge(self._limit.what, self._limit.limit, self._limit.setting)
        return message

    async def read_all(self) -> bytes:
        chunks = []
        while True:
            message = await self()
            if message["type"] != "http.request":
                break  # the client went away; the route will see an empty body
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


class _Replay:
    """A receive that hands the route the body already read, then the real receive
    (the route may wait for the client to disconnect, as the event stream does)."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._body: bytes | None = body
        self._receive = receive

    async def __call__(self) -> Message:
        if self._body is None:
            return await self._receive()
        body, self._body = self._body, None
        return {"type": "http.request", "body": body, "more_body": False}
