"""The reporter's edge: whatever httpx raises leaves it as a ControllerError."""

import httpx
import pytest

from crossfarm.shared.arch import Arch
from crossfarm.shared.errors import Conflict, ControllerError
from crossfarm.shared.events import Events
from crossfarm.shared.ids import JobId
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import JobFinished
from crossfarm.worker.heartbeat import describe
from crossfarm.worker.reporter import Reporter
from crossfarm.worker.settings import WorkerSettings


def _reporter(handler):
    return Reporter("http://controller.invalid", None, Events("redis://127.0.0.1:1"),
                    transport=httpx.MockTransport(handler))


def _info():
    return describe(WorkerSettings(worker_name="w1"), Arch.AMD64, None)


def test_an_unreachable_controller_is_a_controller_error_without_a_status():
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ControllerError, match="unreachable") as caught:
        _reporter(refuse).heartbeat("w1", _info(), fresh_start=True)
    assert caught.value.status_code is None


def test_a_heartbeat_the_controller_refuses_is_a_controller_error_with_its_status():
    with pytest.raises(ControllerError, match="refused") as caught:
        _reporter(lambda request: httpx.Response(503)).heartbeat("w1", _info(), False)
    assert caught.value.status_code == 503


def test_an_acknowledged_heartbeat_returns_the_controllers_reply():
    reply = _reporter(lambda request: httpx.Response(200, json={"drain": True})).heartbeat(
        "w1", _info(), fresh_start=False)
    assert reply.drain


def _finished():
    return JobFinished(attempt=1, worker="w1", lease="s" * 43, state=BuildState.SUCCEEDED,
                       exit_code=0)


@pytest.mark.parametrize("body", [
    {"type": "https://crossfarm.dev/problems/conflict", "title": "Conflict", "status": 409,
     "detail": "job j-1 attempt 1 is stale: the job is at attempt 2; this outcome is dropped"},
    {"error": "Conflict", "message": "job j-1 attempt 1 is stale: the job is at attempt 2; "
     "this outcome is dropped", "fields": {}},
], ids=["problem", "older-controller"])
def test_a_refused_outcome_is_a_conflict_saying_why(body):
    reporter = _reporter(lambda request: httpx.Response(409, json=body))
    with pytest.raises(Conflict, match="attempt 1 is stale"):
        reporter.finished(JobId("j-1"), _finished())
