"""The health contract every process of the farm answers, and the probe runner behind it.

    GET /healthz   200 {"status": "ok"}: the process runs; it checks nothing else, so a
                   supervisor restarts only a process that is truly stuck or gone
    GET /readyz    200 {"status": "ready", "checks": {"redis": "ok", …}} when every
                   dependency answered; 503 application/problem+json of kind
                   `not-ready` naming each one that did not (`failing`, `checks`)

Each check runs in a thread of its own under a deadline: a dependency that hangs (a cut
link) fails its check in `timeout_s`, never holds the probe. A check still running from
an earlier probe is not started again; it fails with "still waiting" until it returns,
so a probe every second against a dead host never piles up threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

#: The problem type of a failed readiness probe (docs/errors.md).
NOT_READY = "not-ready"
PROBLEM_TYPE = "https://crossfarm.dev/problems/" + NOT_READY
OK = "ok"


@dataclass(frozen=True)
class Check:
    """One dependency: its name as the probe reports it, and a call that raises unless it
    answers."""

    name: str
    probe: Callable[[], object]


@dataclass(frozen=True)
class Verdicts:
    """Each check's answer: "ok", or what went wrong."""

    checks: dict[str, str]

    @property
    def failing(self) -> list[str]:
        return [name for name, said in self.checks.items() if said != OK]

    @property
    def ready(self) -> bool:
        return not self.failing

    def detail(self) -> str:
        """A sentence for the problem's `detail`: who failed, and what to look at."""
        parts = "; ".join(f"{name} ({self.checks[name]})" for name in self.failing)
        return (f"not ready: {parts}. Check that each named service runs and that this "
                "process's CROSSFARM_* settings point at it")

    def body(self) -> dict[str, object]:
        """The JSON body: the ready document, or the not-ready problem's members."""
        if self.ready:
            return {"status": "ready", "checks": self.checks}
        return {"type": PROBLEM_TYPE, "title": "Not ready", "status": 503,
                "detail": self.detail(), "failing": self.failing, "checks": self.checks}


class Readiness:
    """Runs the checks at once, each in its own daemon thread, and waits `timeout_s` for
    them all."""

    def __init__(self, checks: list[Check], timeout_s: float = 3.0) -> None:
        self._checks, self._timeout_s = checks, timeout_s
        self._lock = threading.Lock()
        self._running: dict[str, Future[None]] = {}

    def verdicts(self) -> Verdicts:
        futures = {check.name: self._start(check) for check in self._checks}
        deadline = time.monotonic() + self._timeout_s
        checks: dict[str, str] = {}
        for name, future in futures.items():
            if future is None:
                checks[name] = "still waiting on the previous check's answer"
                continue
            try:
                future.result(timeout=max(deadline - time.monotonic(), 0))
            except TimeoutError:
                checks[name] = f"no answer within {self._timeout_s:g} s"
            except Exception as exc:  # each check's own error is the verdict
                checks[name] = _said(exc)
            else:
                checks[name] = OK
        return Verdicts(checks)

    def _start(self, check: Check) -> Future[None] | None:
        with self._lock:
            earlier = self._running.get(check.name)
            if earlier is not None and not earlier.done():
                return None
            future: Future[None] = Future()
            self._running[check.name] = future

        def run() -> None:
            try:
                check.probe()
            except BaseException as exc:  # handed to the waiting probe, never lost
                future.set_exception(exc)
            else:
                future.set_result(None)

        threading.Thread(target=run, name=f"readyz-{check.name}", daemon=True).start()
        return future


def _said(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:300]
