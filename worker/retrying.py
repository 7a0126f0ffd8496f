"""Riding out an object-store outage: a storage step is tried again with backoff until it
works, the job is stopped (cancelled or superseded), or the retry window closes.

A finished build whose upload fails is the costly case: without this, an outage of a
few seconds throws away a compile of many minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from crossfarm.shared.errors import BuildCancelled, StorageError

T = TypeVar("T")

#: How often a waiting retry looks at the stop check, in seconds.
_POLL_S = 0.5


def delays(first: float = 1.0, cap: float = 15.0) -> Iterator[float]:
    """1, 2, 4, 8, 15, 15, … seconds: exponential, capped."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)


@dataclass(frozen=True)
class Retry:
    """How a job retries storage steps."""

    #: how long one step may keep failing before its failure is final, in seconds
    window_s: float
    #: the job's own deadline (monotonic): no retry waits past it
    deadline: float
    #: the job's stop check: a reason to stop (cancelled, superseded), or None
    stop: Callable[[], str | None]
    #: where to say that a step is being retried (the job's log)
    say: Callable[[str], None]
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def run(self, what: str, step: Callable[[], T]) -> T:
        """step()'s result; StorageError once the window closes; BuildCancelled if the
        job is stopped while waiting."""
        started = self.clock()
        give_up_at = min(self.deadline, started + self.window_s)
        for tries, delay in enumerate(delays(), start=1):
            try:
                return step()
            except StorageError as exc:
                if not exc.retryable:
                    raise
                if self.clock() + delay > give_up_at:
                    raise StorageError(f"{exc.message} ({tries} tries over "
                                       f"{self.clock() - started:.0f} s)",
                                       retryable=exc.retryable) from exc
                self.say(f"crossfarm: {what}: {exc.message}; retrying in {delay:g} s")
                self._wait(delay)
        raise AssertionError("delays() never ends")  # pragma: no cover

    def _wait(self, seconds: float) -> None:
        until = self.clock() + seconds
        while (left := until - self.clock()) > 0:
            if reason := self.stop():
                raise BuildCancelled(reason)
            self.sleep(min(left, _POLL_S))
