"""The controller's access log leaves out routine successes: heartbeats, probes, scrapes."""

import logging

import pytest

from crossfarm.controller.app import RoutineRequests, lean_log_records
from crossfarm.shared.logs import LogFormat, formatter


def _access(method, path, status):
    # uvicorn's access record: (client, method, path, http version, status)
    return logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                             ("127.0.0.1:5000", method, path, "1.1", status), None)


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/workers/worker-amd64/heartbeat"),
    ("POST", "/v1/workers/w1/heartbeat?fresh_start=true"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
])
def test_a_successful_heartbeat_probe_or_scrape_is_not_logged(method, path):
    assert not RoutineRequests().filter(_access(method, path, 200))


def test_a_failed_heartbeat_or_probe_is_still_logged():
    assert RoutineRequests().filter(_access("POST", "/v1/workers/w1/heartbeat", 401))
    assert RoutineRequests().filter(_access("GET", "/readyz", 503))


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/builds"),
    ("POST", "/v1/builds"),
    ("GET", "/metricsx"),
    ("GET", "/v1/workers/w1/heartbeat/extra"),
])
def test_every_other_request_is_logged(method, path):
    assert RoutineRequests().filter(_access(method, path, 200))


def test_lean_records_print_the_same_lines_without_thread_process_or_caller(monkeypatch):
    for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, name, getattr(logging, name))  # restored afterwards
    before = _access("GET", "/v1/builds", 200)
    lean_log_records()
    after = _access("GET", "/v1/builds", 200)
    after.created, after.msecs = before.created, before.msecs
    assert (after.thread, after.process, after.processName) == (None, None, None)
    for fmt in LogFormat:
        assert formatter(fmt).format(after) == formatter(fmt).format(before)
