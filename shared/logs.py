"""How every process of the farm writes its log: one line per record, as text for a person
or as JSON lines for a collector, each carrying the job it is about.

    CROSSFARM_LOG_FORMAT=text (default)
      2026-12-02 01:00:00,123 INFO crossfarm.worker.pipeline: cargo build started
          [build=b-… job=j-… attempt=2 worker=w1 tenant=acme]
    CROSSFARM_LOG_FORMAT=json
      {"ts": "2026-12-02T01:00:00.123Z", "level": "INFO", "logger": "crossfarm.worker…",
       "message": "cargo build started", "build_id": "b-…", "job_id": "j-…",
       "attempt": 2, "worker": "w1", "tenant": "acme"}

A job's fields come from a context variable set where a process starts working on one
job (`job_context`): every record made inside it, by any logger (Celery's, httpx's, ours),
carries them, with no logger of ours passing them along.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO


class LogFormat(enum.StrEnum):
    """How log records are written (CROSSFARM_LOG_FORMAT)."""

    #: one human-readable line per record
    TEXT = "text"
    #: one JSON object per line, for Loki, Elasticsearch, CloudWatch and the like
    JSON = "json"


@dataclass(frozen=True)
class JobFields:
    """What identifies the job a record is about; a field not known where the context was
    entered (the controller knows no worker before a start) stays None."""

    build_id: str | None = None
    job_id: str | None = None
    attempt: int | None = None
    worker: str | None = None
    tenant: str | None = None


_JOB: contextvars.ContextVar[JobFields | None] = contextvars.ContextVar(
    "crossfarm_job", default=None)
_FIELDS = tuple(JobFields.__dataclass_fields__)
_TEXT_NAMES = {"build_id": "build", "job_id": "job"}


def bind_job(fields: JobFields) -> contextvars.Token[JobFields | None]:
    """From now on in this context, records carry `fields`, until `unbind_job` with the
    token returned: for a start and an end told apart (Celery's task signals)."""
    return _JOB.set(fields)


def unbind_job(token: contextvars.Token[JobFields | None]) -> None:
    _JOB.reset(token)


@contextlib.contextmanager
def job_context(build_id: str | None = None, job_id: str | None = None,
                attempt: int | None = None, worker: str | None = None,
                tenant: str | None = None) -> Iterator[JobFields]:
    """Every record made in the block carries these fields, over those of an enclosing
    block (a field given as None keeps the enclosing one's)."""
    outer = _JOB.get() or JobFields()
    fields = JobFields(
        build_id=outer.build_id if build_id is None else build_id,
        job_id=outer.job_id if job_id is None else job_id,
        attempt=outer.attempt if attempt is None else attempt,
        worker=outer.worker if worker is None else worker,
        tenant=outer.tenant if tenant is None else tenant)
    token = _JOB.set(fields)
    try:
        yield fields
    finally:
        _JOB.reset(token)


class JobFilter(logging.Filter):
    """Puts the current job's fields on each record (None when it is about no job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _JOB.get()
        for name in _FIELDS:
            setattr(record, name, getattr(fields, name) if fields else None)
        return True


def _job_of(record: logging.LogRecord) -> dict[str, object]:
    return {name: value for name in _FIELDS
            if (value := getattr(record, name, None)) is not None}


class TextFormatter(logging.Formatter):
    """`time level logger: message [build=… job=… attempt=… worker=… tenant=…]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        job = _job_of(record)
        if not job:
            return line
        tags = " ".join(f"{_TEXT_NAMES.get(k, k)}={v}" for k, v in job.items())
        head, newline, tail = line.partition("\n")  # a traceback stays below its line
        return f"{head} [{tags}]{newline}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: a message or a traceback that holds
    newlines is escaped, so a collector never splits a record."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_job_of(record),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt is LogFormat.JSON else TextFormatter()


#: Loggers that log one line per HTTP call at INFO: a worker's 5 s heartbeat made one
#: line each. Their warnings (a failed connection) still show.
_CHATTY = ("httpx", "httpcore")


def configure(fmt: LogFormat, level: int = logging.INFO, stream: TextIO | None = None
              ) -> logging.Handler:
    """Route every record through one handler on stderr (or `stream`) in `fmt`, with the
    job fields; replaces the root logger's handlers. Returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(JobFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def fields_of(record: logging.LogRecord) -> dict[str, object]:
    """The job fields a record carries (after JobFilter), for tests and other handlers."""
    return _job_of(record)
