"""The worker's lease: when the controller last acknowledged a heartbeat.

A worker cut off from the controller (its link is down, the controller is gone) is
declared lost once it has been silent for the controller's bound, and its jobs run
again elsewhere. Its own builds would go on burning CPU for nothing, so once the lease
has lapsed for twice that bound a build stops itself and reports nothing.

The heartbeat runs in the worker's main process and the builds in its pool processes,
so the lease is one small file in the scratch folder.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

#: A build stops once no heartbeat was acknowledged for this many times the bound.
MARGIN = 2


class Lease:
    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        # CLOCK_MONOTONIC is one clock for every process of a host (and immune to NTP
        # steps); a reboot resets it, which forget() at start-up covers.
        self._path, self._clock = path, clock

    def forget(self) -> None:
        """A new worker process starts with no lease (a stale file must not fence it)."""
        self._path.unlink(missing_ok=True)

    def renewed(self, lost_after_s: float) -> None:
        """The controller acknowledged a heartbeat now; it calls a worker lost after
        `lost_after_s` seconds of silence."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=self._path.parent, prefix=".lease-")
        with os.fdopen(fd, "w") as out:
            json.dump({"acked_at": self._clock(), "lost_after_s": lost_after_s}, out)
        os.replace(partial, self._path)

    def lapsed(self) -> str | None:
        """Why this worker no longer owns its jobs, or None while it does (or has not
        heard from the controller yet)."""
        try:
            lease = json.loads(self._path.read_text())
            acked_at, bound = float(lease["acked_at"]), float(lease["lost_after_s"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        silent = self._clock() - acked_at
        if silent <= MARGIN * bound:
            return None
        return (f"cut off from the controller for {silent:.0f} s (it calls a worker lost "
                f"after {bound:g} s): the job runs again elsewhere, so this build stops")
