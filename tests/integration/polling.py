"""The one polling loop the integration tests share: wait until a farm reaches a state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(check: Callable[[], T], what: str, timeout: float = 120, every: float = 0.2) -> T:
    """check()'s first truthy value; fails naming `what` once `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
    return value
