"""The log format every process uses: JSON lines or text, each line about a job naming it."""

import io
import json
import logging

import pytest

from crossfarm.shared.logs import LogFormat, configure, job_context


@pytest.fixture
def logged():
    """Configure the root logger into a buffer, as a process's main() does, and put the
    root logger back as it was afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("httpx").level)
    buffer = io.StringIO()

    def start(fmt):
        configure(fmt, stream=buffer)
        return buffer

    yield start
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    logging.getLogger("httpx").setLevel(saved[2])


def _lines(buffer):
    return buffer.getvalue().splitlines()


def test_a_json_line_about_a_job_carries_its_build_job_attempt_worker_and_tenant(logged):
    out = logged(LogFormat.JSON)
    with job_context(build_id="b-1", job_id="j-1", attempt=2, worker="w1", tenant="acme"):
        logging.getLogger("crossfarm.worker.pipeline").info("cargo build started")
    [line] = _lines(out)
    doc = json.loads(line)
    assert doc["message"] == "cargo build started"
    assert doc["level"] == "INFO"
    assert doc["logger"] == "crossfarm.worker.pipeline"
    assert doc["ts"].endswith("Z")
    assert {k: doc[k] for k in ("build_id", "job_id", "attempt", "worker", "tenant")} == {
        "build_id": "b-1", "job_id": "j-1", "attempt": 2, "worker": "w1", "tenant": "acme"}


def test_a_line_about_no_job_names_none(logged):
    out = logged(LogFormat.JSON)
    logging.getLogger("crossfarm.controller.app").warning("object store not ready")
    doc = json.loads(_lines(out)[0])
    assert not {"build_id", "job_id", "attempt", "worker", "tenant"} & set(doc)


def test_any_library_logging_inside_a_job_names_the_job_too(logged):
    out = logged(LogFormat.JSON)
    with job_context(build_id="b-1", job_id="j-1", attempt=1, tenant="acme"):
        logging.getLogger("celery.app.trace").error("task failed")
    assert json.loads(_lines(out)[0])["job_id"] == "j-1"


def test_a_nested_context_adds_fields_and_the_outer_one_returns_after_it(logged):
    out = logged(LogFormat.JSON)
    log = logging.getLogger("crossfarm.controller.jobs")
    with job_context(build_id="b-1", job_id="j-1", tenant="acme"):
        with job_context(attempt=3, worker="w2"):
            log.info("inner")
        log.info("outer")
    inner, outer = (json.loads(line) for line in _lines(out))
    assert (inner["attempt"], inner["worker"], inner["job_id"]) == (3, "w2", "j-1")
    assert "attempt" not in outer
    assert outer["job_id"] == "j-1"


def test_a_traceback_stays_inside_its_one_json_line(logged):
    out = logged(LogFormat.JSON)
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logging.getLogger("crossfarm").exception("pass failed\nbadly")
    [line] = _lines(out)
    doc = json.loads(line)
    assert doc["message"] == "pass failed\nbadly"
    assert "ValueError: bad" in doc["exception"]


def test_a_text_line_about_a_job_ends_with_its_fields(logged):
    out = logged(LogFormat.TEXT)
    with job_context(build_id="b-1", job_id="j-1", attempt=1, worker="w1", tenant="acme"):
        logging.getLogger("crossfarm.worker.pipeline").info("uploading 3 artifacts")
    [line] = _lines(out)
    assert line.endswith(" INFO crossfarm.worker.pipeline: uploading 3 artifacts "
                         "[build=b-1 job=j-1 attempt=1 worker=w1 tenant=acme]")


def test_httpx_request_lines_are_quieted_but_its_warnings_still_show(logged):
    out = logged(LogFormat.TEXT)
    logging.getLogger("httpx").info('HTTP Request: POST http://c/v1/workers/w1/heartbeat "200"')
    logging.getLogger("httpx").warning("connection pool is full")
    assert len(_lines(out)) == 1
    assert "connection pool is full" in _lines(out)[0]


def test_the_log_format_setting_accepts_json_or_text_and_refuses_anything_else(monkeypatch):
    from pydantic import ValidationError

    from crossfarm.worker.settings import WorkerSettings

    monkeypatch.setenv("CROSSFARM_LOG_FORMAT", "json")
    assert WorkerSettings().log_format is LogFormat.JSON
    monkeypatch.setenv("CROSSFARM_LOG_FORMAT", "yaml")
    with pytest.raises(ValidationError, match="json"):
        WorkerSettings()
