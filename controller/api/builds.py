"""/v1/builds: submit, inspect, follow, list artifacts, cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from crossfarm.controller import builds
from crossfarm.controller.api.deps import BuildIdDep, FarmDep, PrincipalDep, SubmitterDep
from crossfarm.controller.api.submits import SubmitBatches
from crossfarm.controller.errors import responses
from crossfarm.shared.errors import InvalidRequest
from crossfarm.shared.events import EventReader, parse_event_id
from crossfarm.shared.ids import BuildId
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import (
    ArtifactView,
    BuildRequest,
    BuildView,
    Event,
    opening_events,
)

router = APIRouter(prefix="/v1/builds", tags=["builds"])

#: How long one Redis read blocks before the stream sends a keep-alive comment.
_KEEPALIVE_MS = 15_000
#: A Redis stream entry id, as the stream sends it (each part fits Redis' 64 bits).
_ENTRY_ID = r"^\d{1,19}-\d{1,19}$"


class EventStream(StreamingResponse):
    media_type = "text/event-stream"


#: The stream as OpenAPI 3.1 describes one: `schema` is the schema of each event.
_EVENTS: dict[int | str, dict[str, object]] = {200: {
    "description": "Server-Sent Events: `log`, `state` and a last `end` event, each with its "
                   "id (resume with Last-Event-ID) and an Event as its data",
    "content": {"text/event-stream": {"schema": {
        "type": "object",
        "properties": {
            "event": {"enum": ["log", "state", "end"]},
            "id": {"type": "string", "pattern": r"^\d+-\d+$"},
            "data": {"type": "string", "contentMediaType": "application/json",
                     "contentSchema": {"$ref": "#/components/schemas/Event"}},
            "retry": {"type": "integer", "minimum": 0},
        },
        "required": ["data"],
    }}},
}}


class _Json(Response):
    """A wire model's own JSON, as FastAPI would send it: without FastAPI validating the
    model again against its `response_model` and encoding it in a second pass."""

    media_type = "application/json"

    def __init__(self, view: BuildView, status_code: int = 200) -> None:
        super().__init__(view.model_dump_json(), status_code)


@router.post("", status_code=201, response_model=BuildView,
             responses=responses(400, 401, 403, 404, 413, 422, 429, 503))
async def submit_build(farm: FarmDep, principal: SubmitterDep, request: BuildRequest,
                       http: Request) -> Response:
    """The build is the token's tenant's, submitted by "<token name>@<tenant>"; a
    `submitter` in the request is ignored."""
    batches: SubmitBatches = http.app.state.submits  # one hop to the pool per batch
    return _Json(await batches.submit(farm, builds.Submit(
        request, principal.tenant, principal.submitter, any_source=principal.scope is None)),
        201)


_NEXT_LINK: dict[str, object] = {
    "description": 'RFC 8288: `<URL of the next page>; rel="next"`, present only when more '
                   "builds follow. Its URL repeats this request's filters with `after` set "
                   "to an opaque cursor; follow it as it is.",
    "schema": {"type": "string"},
}


_LISTED: dict[int | str, dict[str, object]] = {200: {"headers": {"Link": _NEXT_LINK}}}


@router.get("", responses=_LISTED | responses(401, 403, 422))
def list_builds(
    farm: FarmDep,
    principal: PrincipalDep,
    request: Request,
    response: Response,
    submitter: Annotated[str | None, Query(max_length=200)] = None,
    mine: Annotated[bool, Query(description="only builds submitted with this token's name")
                    ] = False,
    state: BuildState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
    after: Annotated[str | None, Query(max_length=200)] = None,
) -> list[BuildView]:
    """The tenant's builds (an operator's: every tenant's), newest first, `limit` at a
    time: a `Link` header names the next page."""
    page = builds.list_builds(farm, limit, after,
                              submitter=principal.submitter if mine else submitter,
                              state=state, tenant=principal.scope)
    if page.next is not None:
        # Relative: behind a proxy the request's own scheme and host may not be the
        # client's, and a client sends its token wherever the link points.
        url = request.url.include_query_params(after=page.next.encode())
        response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    return page.builds


@router.get("/{build_id}", response_model=BuildView, responses=responses(401, 403, 404))
async def get_build(farm: FarmDep, principal: PrincipalDep, build_id: BuildIdDep) -> Response:
    # Unchanged since it was last read, the build is answered from memory on the event
    # loop; otherwise read in the thread pool.
    view = builds.kept_build(farm, build_id, principal.scope)
    if view is None:
        view = await run_in_threadpool(builds.get_build, farm, build_id, principal.scope)
    return _Json(view)


@router.post("/{build_id}/cancel", responses=responses(401, 403, 404, 409))
def cancel_build(farm: FarmDep, principal: SubmitterDep, build_id: BuildIdDep) -> BuildView:
    return builds.cancel_build(farm, build_id, principal.scope)


@router.get("/{build_id}/artifacts", responses=responses(401, 403, 404, 503))
def list_artifacts(farm: FarmDep, principal: PrincipalDep, build_id: BuildIdDep
                   ) -> list[ArtifactView]:
    return builds.list_artifacts(farm, build_id, principal.scope)


_STORED_LOG: dict[int | str, dict[str, object]] = {
    307: {"description": "to a short-lived download URL of the log, as plain text"}}


@router.get("/{build_id}/log", status_code=307, response_class=RedirectResponse,
            responses=_STORED_LOG | responses(401, 403, 404, 409))
def stored_log(farm: FarmDep, principal: PrincipalDep, build_id: BuildIdDep,
               target: Annotated[str, Query(max_length=100)]) -> RedirectResponse:
    """The log one target's last attempt stored when it ended, which outlives the live
    event stream (kept for `event_ttl_s` after the build ends)."""
    return RedirectResponse(builds.stored_log_url(farm, build_id, target, principal.scope),
                            307)


@router.get("/{build_id}/events", response_class=EventStream,
            responses=_EVENTS | responses(401, 403, 404, 422))
async def stream_events(
    farm: FarmDep,
    principal: PrincipalDep,
    build_id: BuildIdDep,
    request: Request,
    last_event_id: Annotated[str | None, Header(max_length=100)] = None,
    after: Annotated[str | None, Query(max_length=100)] = None,
    follow: bool = True,
) -> StreamingResponse:
    """Server-Sent Events: log lines and state changes in order, ending with an `end` event.
    Reconnect with Last-Event-ID (or ?after=) to resume without gaps or repeats; an id
    this stream never sent (not `<ms>-<seq>`) is refused with 422 before it starts, as
    reading from the start instead would repeat what the client already has.

    The stream opens with each job's first state, from the record: `queued`, where every
    job a worker runs starts, or `succeeded` for one served from the result cache (with a
    line naming the build whose artifacts it has); the build's Redis stream holds only
    what happened since."""
    start = _resume_point(last_event_id, after)
    build = await run_in_threadpool(builds.get_build, farm, build_id,
                                    principal.scope)
    reader: EventReader = request.app.state.event_reader

    async def ended() -> bool:
        if not follow:
            return True
        return (await run_in_threadpool(builds.get_build, farm, build_id)).state.terminal

    return StreamingResponse(
        _sse(reader, build_id, _opening(build, start), start,
             build.state.terminal or not follow, ended, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _resume_point(last_event_id: str | None, after: str | None) -> str:
    """The entry id to read after: the header's, else the query's, else the start."""
    for name, given in (("Last-Event-ID", last_event_id), ("after", after)):
        if not given:  # an empty id is SSE's "none yet"
            continue
        try:
            parse_event_id(given)
        except ValueError as exc:
            raise InvalidRequest(
                f"{name}: {exc}. Resume with an id this stream sent, or leave it out to "
                "read from the start") from None
        return given
    return "0-0"


def _opening(build: BuildView, after: str) -> list[tuple[str, Event]]:
    """Each job's first state, then what a job still queued waits for or which build a
    cached one was served from, as ids 0-1, 0-2, ...: below any id Redis gives, so a
    client that resumes inside the opening gets the rest of it and then the whole
    stream. All of it comes from the record: a held build's stream is created only once
    something happens to it, and a cached one's never is."""
    ms, seq = parse_event_id(after)
    if ms:
        return []
    return [(f"0-{n}", event) for n, event in enumerate(opening_events(build), start=1)
            if n > seq]


async def _sse(
    reader: EventReader, build_id: BuildId, opening: list[tuple[str, Event]], after: str,
    terminal: bool, ended: Callable[[], Awaitable[bool]], request: Request,
) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    for after, event in opening:
        yield _frame(after, event)
    while not await request.is_disconnected():
        entries = await reader.read(build_id, after, block_ms=0 if terminal else _KEEPALIVE_MS)
        if not entries:
            if terminal:  # all read (or the stream expired): still close with an end event
                yield _frame(after, Event(kind="end"))
                return
            # The record is the truth: if the build ended while its events were lost (Redis
            # restarted), one more read drains what is there, then the stream closes.
            terminal = await ended()
            yield ": keep-alive\n\n"
            continue
        for entry_id, event in entries:
            after = entry_id
            yield _frame(entry_id, event)
            if event.kind == "end":
                return


def _frame(entry_id: str, event: Event) -> str:
    data = event.model_dump_json(exclude_none=True)
    return f"id: {entry_id}\nevent: {event.kind}\ndata: {data}\n\n"
