import httpx
import pytest
from httpx_sse import EventSource

from crossfarm.client.api import FarmClient, _events, _explain
from crossfarm.shared.errors import FarmError
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import Event, Problem

X86 = "x86_64-unknown-linux-gnu"


def _frames(*events_and_ids):
    lines = []
    for entry_id, event in events_and_ids:
        if entry_id:
            lines.append(f"id: {entry_id}")
        lines += [f"data: {event.model_dump_json()}", ""]
    return lines


def _stream(lines):
    return httpx.Response(200, headers={"Content-Type": "text/event-stream"},
                          content="".join(f"{line}\n" for line in lines))


def _parse_sse(lines):
    return _events(EventSource(_stream(list(lines))))


def test_each_frame_yields_its_id_and_event():
    log = Event(kind="log", target=X86, line="Compiling hello")
    state = Event(kind="state", target=X86, state=BuildState.SUCCEEDED)
    end = Event(kind="end")
    parsed = list(_parse_sse(iter(_frames(("1-0", log), ("2-0", state), ("3-0", end)))))
    assert parsed == [("1-0", log), ("2-0", state), ("3-0", end)]


def test_data_spread_over_several_lines_is_joined():
    lines = [
        "id: 7-1",
        'data: {"kind": "log",',
        f'data: "target": "{X86}",',
        'data: "line": "warning: unused"}',
        "",
    ]
    assert list(_parse_sse(iter(lines))) == [
        ("7-1", Event(kind="log", target=X86, line="warning: unused"))
    ]


# As SSE has it, a frame without an id resumes after the last id the stream sent.
def test_a_frame_without_an_id_yields_the_last_id_sent_before_it():
    first = Event(kind="log", line="a")
    second = Event(kind="log", line="b")
    assert list(_parse_sse(iter(_frames(("5-0", first), (None, second))))) == [
        ("5-0", first),
        ("5-0", second),
    ]


def test_comments_blank_runs_and_an_unfinished_frame_yield_nothing():
    lines = [": keep-alive", "", "", "data: " + Event(kind="end").model_dump_json()]
    assert list(_parse_sse(iter(lines))) == []


def test_the_opening_retry_frame_and_a_keep_alive_after_an_event_yield_nothing_more():
    log = Event(kind="log", line="a")
    lines = ["retry: 2000", "", *_frames(("4-0", log)), ": keep-alive", ""]
    assert list(_parse_sse(iter(lines))) == [("4-0", log)]


def _farm(*streams):
    """A client whose farm answers each events request with the next of `streams`."""
    asked = []

    def handler(request):
        asked.append(request.headers.get("Last-Event-ID"))
        return streams[len(asked) - 1]

    return FarmClient("http://farm", transport=httpx.MockTransport(handler)), asked


def test_a_stream_that_ends_early_is_resumed_after_the_last_event_id():
    log = Event(kind="log", target=X86, line="Compiling hello")
    end = Event(kind="end")
    client, asked = _farm(_stream(_frames(("1-0", log))), _stream(_frames(("2-0", end))))
    assert list(client.events("b-0123456789abcdef")) == [log, end]
    assert asked == [None, "1-0"]


def _problem(status, detail, kind="not-found"):
    return Problem(type=f"https://crossfarm.dev/problems/{kind}", title="Not found",
                   status=status, detail=detail)


def test_a_refused_stream_is_explained():
    body = _problem(404, "no build b-0123456789abcdef")
    client, _ = _farm(httpx.Response(404, content=body.model_dump_json()))
    with pytest.raises(FarmError, match=r"no build b-0123456789abcdef \(HTTP 404\)"):
        list(client.events("b-0123456789abcdef"))


def test_a_problem_is_explained_by_its_detail_and_status():
    body = _problem(404, "no build b-0123456789abcdef")
    response = httpx.Response(404, content=body.model_dump_json(),
                              headers={"Content-Type": "application/problem+json"})
    assert _explain(response) == "no build b-0123456789abcdef (HTTP 404)"


def test_a_validation_problem_is_explained_by_its_detail_not_its_field_list():
    body = {"type": "https://crossfarm.dev/problems/invalid-request", "title": "Invalid request",
            "status": 422, "detail": "the request does not match the API: body.targets: "
            "Field required; fix it and send it again",
            "errors": [{"loc": ["body", "targets"], "msg": "Field required", "type": "missing"}]}
    assert _explain(httpx.Response(422, json=body)) == (
        "the request does not match the API: body.targets: Field required; fix it and send "
        "it again (HTTP 422)")


def test_an_older_controllers_error_body_is_explained_by_its_message():
    body = {"error": "NotFound", "message": "no build b-0123456789abcdef", "fields": {}}
    assert _explain(httpx.Response(404, json=body)) == "no build b-0123456789abcdef (HTTP 404)"


def test_an_older_controllers_validation_body_names_each_field_without_its_location_root():
    response = httpx.Response(
        422,
        json={
            "detail": [
                {"loc": ["body", "targets"], "msg": "List should have at least 1 item"},
                {"loc": ["body", "env", "1X"], "msg": "String should match pattern"},
            ]
        },
    )
    assert _explain(response) == (
        "the farm refused the request: targets: List should have at least 1 item; "
        "env.1X: String should match pattern (HTTP 422)"
    )


def test_a_body_that_is_not_json_is_shown_as_text():
    response = httpx.Response(502, text="<html>Bad Gateway</html>")
    assert _explain(response) == "HTTP 502: <html>Bad Gateway</html>"


def test_a_long_text_body_is_cut_short():
    response = httpx.Response(500, text="x" * 2000)
    assert _explain(response) == "HTTP 500: " + "x" * 500


def test_a_plain_detail_is_explained_as_the_reason():
    response = httpx.Response(401, json={"detail": "operator token missing or wrong"})
    assert _explain(response) == "operator token missing or wrong (HTTP 401)"


def test_json_that_is_neither_shape_is_shown_as_text():
    response = httpx.Response(400, json={"error": "Not authenticated"})
    assert _explain(response) == 'HTTP 400: {"error":"Not authenticated"}'


# A proxy in front of the farm may answer with any JSON document; the CLI must
# still say what happened instead of failing with an AttributeError.
def test_a_json_body_that_is_not_an_object_is_shown_as_text():
    response = httpx.Response(502, json=["bad", "gateway"])
    assert _explain(response) == 'HTTP 502: ["bad","gateway"]'
