"""The controller's adapters, built once by create_app and handed to every use-case."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from crossfarm.controller.metrics import FarmMetrics
from crossfarm.controller.queue import JobQueue
from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store import Store
from crossfarm.shared.events import Events
from crossfarm.shared.storage import ObjectStore
from crossfarm.shared.wire import FarmStats


@dataclass
class Counters:
    """What crossed the wire since start-up (read by GET /v1/stats and the tests)."""

    blobs_received: int = 0
    blob_bytes_received: int = 0
    packs_received: int = 0
    pack_bytes_received: int = 0
    trees_created: int = 0
    #: bytes of the trees submitted, each in full: what the wire would carry without dedup
    tree_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def blob(self, size: int) -> None:
        with self._lock:
            self.blobs_received += 1
            self.blob_bytes_received += size

    def pack(self, wire_bytes: int, sizes: dict[str, int]) -> None:
        with self._lock:
            self.packs_received += 1
            self.pack_bytes_received += wire_bytes
            self.blobs_received += len(sizes)
            self.blob_bytes_received += sum(sizes.values())

    def tree(self, total_bytes: int = 0) -> None:
        with self._lock:
            self.trees_created += 1
            self.tree_bytes += total_bytes

    def snapshot(self) -> FarmStats:
        with self._lock:
            return FarmStats(blobs_received=self.blobs_received,
                             blob_bytes_received=self.blob_bytes_received,
                             packs_received=self.packs_received,
                             pack_bytes_received=self.pack_bytes_received,
                             trees_created=self.trees_created)


class Slots:
    """A count of something in progress, held under a limit given at each take: the git
    fetches this controller waits on (each holds a request thread until its worker
    answers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.taken = 0

    @contextlib.contextmanager
    def take(self, limit: int) -> Iterator[bool]:
        """Yields whether a slot was free (and holds it for the block)."""
        with self._lock:
            free = self.taken < limit
            self.taken += free
        try:
            yield free
        finally:
            if free:
                with self._lock:
                    self.taken -= 1


class Doorbell:
    """Rung when a job may start now (a submit, a finished job, a new worker), so the
    placer runs at once instead of at its next interval. Rung from any thread; waited on
    by the placer's loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def ring(self) -> None:
        loop, rung = self._loop, self._event
        if loop is None or rung is None:
            return  # no placer loop (a test, a one-off script): its ticks are called by hand
        with contextlib.suppress(RuntimeError):  # the loop closed: the controller stops
            loop.call_soon_threadsafe(rung.set)

    def bind(self) -> None:
        """Attach to the running loop: call from it before the first ring that counts."""
        self._loop, self._event = asyncio.get_running_loop(), asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        """Until rung or `timeout_s` passed. A ring while the caller worked since its last
        wait counts: the next wait returns at once."""
        if self._event is None:
            self.bind()
        assert self._event is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)
        self._event.clear()


@dataclass(frozen=True)
class Farm:
    """What the use-cases work with."""

    settings: ControllerSettings
    store: Store
    queue: JobQueue
    events: Events
    storage: ObjectStore
    counters: Counters = field(default_factory=Counters)
    #: this farm's Prometheus instruments, in a registry of its own (controller/metrics.py)
    metrics: FarmMetrics = field(default_factory=FarmMetrics)
    doorbell: Doorbell = field(default_factory=Doorbell)
    git_fetches: Slots = field(default_factory=Slots)
