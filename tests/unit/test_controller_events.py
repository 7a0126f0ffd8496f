"""A build's live events as the controller serves them: the submit writes nothing to
Redis, the events route opens with each job's queued state from the record, resumes
inside that opening or after it, and refuses an id it never sent before it starts.
A real SQLite store; a recording event sink and an in-test stream reader."""

import asyncio

import httpx
import pytest

from crossfarm.controller import jobs
from crossfarm.controller.app import create_app
from crossfarm.controller.builds import submit_build
from crossfarm.controller.farm import Farm
from crossfarm.controller.placement import Decision
from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store import Store
from crossfarm.controller.store.jobs import Outcome
from crossfarm.shared.arch import Placement
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import BuildRequest, Event, SourceStatus

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
DIGEST = "0123456789abcdef" * 4


class Recorder:
    """The farm's event sink: keeps what is appended, per build, with Redis-like ids."""

    def __init__(self):
        self.streams = {}

    def append(self, build_id, event, if_exists=False):
        if if_exists and build_id not in self.streams:
            return None
        stream = self.streams.setdefault(build_id, [])
        stream.append((f"{1000 + len(stream)}-0", event))
        return stream[-1][0]

    def set_attempt(self, job_id, attempt):
        pass

    def raise_cancel(self, job_id):
        pass

    def queue_depth(self, queue):
        return 0


class Reader:
    """The events route's reader over the recorder's streams."""

    def __init__(self, recorder):
        self.recorder = recorder
        self.asked_after = []

    async def read(self, build_id, after, block_ms, count=500):
        self.asked_after.append(after)
        stream = self.recorder.streams.get(build_id, [])
        return [(i, e) for i, e in stream if tuple(map(int, i.split("-"))) >
                tuple(map(int, after.split("-")))]


class Sent:
    def enqueue(self, message, queue):
        pass


@pytest.fixture
def farm(tmp_path):
    settings = ControllerSettings(database_url=f"sqlite:///{tmp_path}/db.sqlite",
                                  default_placement=Placement.NATIVE)
    store = Store(settings.database_url)
    store.sources.add_tree(SourceStatus(digest=DIGEST, files=1, total_bytes=10))
    yield Farm(settings=settings, store=store, queue=Sent(), events=Recorder(), storage=None)
    store.close()


@pytest.fixture
def api(farm):
    app = create_app(farm.settings)
    app.state.farm = farm
    reader = app.state.event_reader = Reader(farm.events)

    def get(url, **headers):
        async def call():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://farm") as c:
                return await c.get(url, headers=headers)

        return asyncio.run(call())

    get.reader = reader
    return get


def _submit(farm, targets=(ARM, X86)):
    return submit_build(farm, BuildRequest(source=DIGEST, targets=list(targets)))


def _frames(response):
    """(id, event) of each frame the stream sent."""
    frames = []
    for block in response.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            frames.append((fields.get("id"), Event.model_validate_json(fields["data"])))
    return frames


def _finish_all(farm, build):
    for job in build.jobs:
        jobs.finish(farm, job.job_id, job.attempt, Outcome(BuildState.CANCELLED, reason="test"))


def test_a_submitted_build_writes_nothing_to_its_event_stream(farm):
    _submit(farm)
    assert farm.events.streams == {}


def test_a_job_sent_again_under_a_new_attempt_says_it_is_queued_again(farm):
    build = _submit(farm, targets=(X86,))
    record = farm.store.jobs.get(build.jobs[0].job_id)
    jobs.resend(farm, record, Decision(mode=record.view.queue.mode, queue=record.view.queue,
                                       placed="again"))
    jobs.send(farm, [farm.store.jobs.get(build.jobs[0].job_id)])  # as the placer does
    [(_, event)] = farm.events.streams[build.build_id]
    assert (event.kind, event.target, event.state) == ("state", X86, BuildState.QUEUED)


def test_the_stream_opens_with_each_jobs_queued_state_then_what_happened(farm, api):
    build = _submit(farm)
    _finish_all(farm, build)
    frames = _frames(api(f"/v1/builds/{build.build_id}/events"))
    assert [(i, e.kind, e.target, e.state) for i, e in frames] == [
        ("0-1", "state", ARM, BuildState.QUEUED),
        ("0-2", "state", X86, BuildState.QUEUED),
        ("1000-0", "state", ARM, BuildState.CANCELLED),
        ("1001-0", "state", X86, BuildState.CANCELLED),
        ("1002-0", "end", None, BuildState.CANCELLED),
    ]


def test_a_build_with_no_stream_still_opens_and_ends_when_not_followed(farm, api):
    build = _submit(farm, targets=(X86,))
    frames = _frames(api(f"/v1/builds/{build.build_id}/events?follow=false"))
    assert [(i, e.kind) for i, e in frames] == [("0-1", "state"), ("0-2", "log"),
                                                ("0-2", "end")]
    assert frames[1][1].line.startswith("crossfarm: waiting: no amd64 worker online")


@pytest.mark.parametrize(("resume", "first"), [("0-1", "0-2"), ("0-2", "1000-0"),
                                               ("1000-0", "1001-0")])
def test_a_client_resuming_gets_what_follows_its_last_id_and_nothing_before(
        farm, api, resume, first):
    build = _submit(farm)
    _finish_all(farm, build)
    everything = _frames(api(f"/v1/builds/{build.build_id}/events"))
    resumed = _frames(api(f"/v1/builds/{build.build_id}/events", **{"Last-Event-ID": resume}))
    assert resumed[0][0] == first
    assert resumed == everything[[i for i, _ in everything].index(first):]


@pytest.mark.parametrize("bad", ["null", "undefined", "garbage", "12", "-1-0", "1-",
                                 "1-0-0", "٣-0".encode(), f"{2**64}-0", "1.5-0"])
def test_an_id_the_stream_never_sent_is_refused_with_422_before_it_starts(farm, api, bad):
    build = _submit(farm, targets=(X86,))
    response = api(f"/v1/builds/{build.build_id}/events", **{"Last-Event-ID": bad})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "Last-Event-ID" in response.json()["detail"]
    assert "leave it out to read from the start" in response.json()["detail"]
    assert api.reader.asked_after == []


def test_an_empty_id_reads_from_the_start(farm, api):
    build = _submit(farm, targets=(X86,))
    response = api(f"/v1/builds/{build.build_id}/events?follow=false", **{"Last-Event-ID": ""})
    assert [i for i, _ in _frames(response)] == ["0-1", "0-2", "0-2"]


def test_a_bad_after_parameter_is_refused_the_same_way(farm, api):
    build = _submit(farm, targets=(X86,))
    response = api(f"/v1/builds/{build.build_id}/events?after=null")
    assert response.status_code == 422
    assert response.json()["detail"].startswith("after: ")
