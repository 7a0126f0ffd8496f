"""What a worker tells the farm: state changes to the controller, log lines to the event stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import httpx

from crossfarm.shared.errors import BrokerError, Conflict, ControllerError
from crossfarm.shared.events import Events
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.wire import (
    Event,
    HeartbeatReply,
    JobFinished,
    JobStarted,
    StartVerdict,
    WorkerHeartbeat,
)


class EventSink(Protocol):
    """Where a job's live log lines go."""

    def line(self, build_id: BuildId, target: str, text: str) -> None: ...


class JobReporter(EventSink, Protocol):
    """What a running job tells the farm, and asks it."""

    def started(self, job_id: JobId, report: JobStarted) -> StartVerdict: ...
    def finished(self, job_id: JobId, report: JobFinished) -> None: ...
    def stop_reason(self, job_id: JobId, attempt: int) -> str | None: ...


class HeartbeatReporter(Protocol):
    """What the heartbeat tells the controller about this worker."""

    def heartbeat(self, name: str, info: WorkerHeartbeat, fresh_start: bool
                  ) -> HeartbeatReply: ...


class Reporter:
    """Reports one worker's jobs; the controller's record is the truth it defers to.
    httpx errors become ControllerError here."""

    def __init__(self, controller_url: str, token: str | None, events: Events,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=controller_url, headers=headers, timeout=30,
                                  transport=transport)
        self._events = events
        self.dropped_lines = 0

    def started(self, job_id: JobId, report: JobStarted) -> StartVerdict:
        with _translated(f"start of {job_id}"):
            response = self._post(f"/v1/jobs/{job_id}/start", report.model_dump_json())
        return StartVerdict.model_validate_json(response.content)

    def finished(self, job_id: JobId, report: JobFinished) -> None:
        with _translated(f"outcome of {job_id}"):
            response = self._post(f"/v1/jobs/{job_id}/finish", report.model_dump_json())
        if response.status_code == 409:
            problem = response.json()  # `message`: a controller older than problem documents
            raise Conflict(problem.get("detail") or problem.get("message")
                           or "the job's attempt is no longer current")

    def heartbeat(self, name: str, info: WorkerHeartbeat, fresh_start: bool) -> HeartbeatReply:
        with _translated(f"heartbeat of {name}"):
            response = self._http.post(
                f"/v1/workers/{name}/heartbeat",
                params={"fresh_start": str(fresh_start).lower()},
                content=info.model_dump_json(), headers={"Content-Type": "application/json"},
            )
            response.raise_for_status()
        return HeartbeatReply.model_validate_json(response.content)

    def line(self, build_id: BuildId, target: str, text: str) -> None:
        """Forward a log line live; with Redis away it is dropped here (the whole log is
        still stored with the artifacts)."""
        try:
            self._events.append(build_id, Event(kind="log", target=target, line=text))
        except BrokerError:
            self.dropped_lines += 1

    def stop_reason(self, job_id: JobId, attempt: int) -> str | None:
        try:
            return self._events.stop_reason(job_id, attempt)
        except BrokerError:
            return None  # Redis away for a moment: keep building, ask again next second

    def _post(self, path: str, body: str) -> httpx.Response:
        # The controller may be restarting: retry a few times before giving up on the report.
        for delay in (0.5, 1, 2, 4, 8, 0):
            try:
                response = self._http.post(
                    path, content=body, headers={"Content-Type": "application/json"}
                )
            except httpx.TransportError:
                if not delay:
                    raise
                time.sleep(delay)
                continue
            if response.status_code < 500 or not delay:
                if response.status_code >= 400 and response.status_code != 409:
                    response.raise_for_status()
                return response
            time.sleep(delay)
        raise AssertionError("unreachable")


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn httpx errors into ControllerError, naming the report and the status."""
    try:
        yield
    except httpx.HTTPStatusError as exc:
        raise ControllerError(f"the controller refused the {what}: {exc}",
                              exc.response.status_code) from exc
    except httpx.HTTPError as exc:
        raise ControllerError(f"the controller is unreachable ({what}): {exc}") from exc
