"""/v1/builds: submit, inspect, follow, list artifacts, cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from crossfarm.controller import builds
from crossfarm.controller.api.deps import BuildIdDep, ClientAuth, FarmDep
from crossfarm.controller.errors import responses
from crossfarm.shared.events import EventReader
from crossfarm.shared.ids import BuildId
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import ArtifactView, BuildRequest, BuildView, Event

router = APIRouter(prefix="/v1/builds", tags=["builds"], dependencies=[ClientAuth])

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


@router.post("", status_code=201,
             responses=responses(400, 401, 403, 404, 413, 422, 429, 503))
def submit_build(farm: FarmDep, request: BuildRequest) -> BuildView:
    return builds.submit_build(farm, request)


@router.get("", responses=responses(401, 403, 422))
def list_builds(
    farm: FarmDep,
    submitter: str | None = None,
    state: BuildState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> list[BuildView]:
    return builds.list_builds(farm, submitter, state, limit)


@router.get("/{build_id}", responses=responses(401, 403, 404))
def get_build(farm: FarmDep, build_id: BuildIdDep) -> BuildView:
    return builds.get_build(farm, build_id)


@router.post("/{build_id}/cancel", responses=responses(401, 403, 404, 409))
def cancel_build(farm: FarmDep, build_id: BuildIdDep) -> BuildView:
    return builds.cancel_build(farm, build_id)


@router.get("/{build_id}/artifacts", responses=responses(401, 403, 404, 503))
def list_artifacts(farm: FarmDep, build_id: BuildIdDep) -> list[ArtifactView]:
    return builds.list_artifacts(farm, build_id)


@router.get("/{build_id}/events", response_class=EventStream,
            responses=_EVENTS | responses(401, 403, 404, 422))
async def stream_events(
    farm: FarmDep,
    build_id: BuildIdDep,
    request: Request,
    last_event_id: Annotated[str | None, Header(pattern=_ENTRY_ID)] = None,
    after: Annotated[str | None, Query(pattern=_ENTRY_ID)] = None,
    follow: bool = True,
) -> StreamingResponse:
    """Server-Sent Events: log lines and state changes in order, ending with an `end` event.
    Reconnect with Last-Event-ID (or ?after=) to resume without gaps or repeats."""
    build = await run_in_threadpool(builds.get_build, farm, build_id)
    start = last_event_id or after or "0-0"
    reader: EventReader = request.app.state.event_reader

    async def ended() -> bool:
        if not follow:
            return True
        return (await run_in_threadpool(builds.get_build, farm, build_id)).state.terminal

    return StreamingResponse(
        _sse(reader, build_id, start, build.state.terminal or not follow, ended, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(
    reader: EventReader, build_id: BuildId, after: str, terminal: bool,
    ended: Callable[[], Awaitable[bool]], request: Request,
) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
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
