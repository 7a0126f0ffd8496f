"""The controller's adapters, built once by create_app and handed to every use-case."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

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

    def tree(self) -> None:
        with self._lock:
            self.trees_created += 1

    def snapshot(self) -> FarmStats:
        with self._lock:
            return FarmStats(blobs_received=self.blobs_received,
                             blob_bytes_received=self.blob_bytes_received,
                             packs_received=self.packs_received,
                             pack_bytes_received=self.pack_bytes_received,
                             trees_created=self.trees_created)


@dataclass(frozen=True)
class Farm:
    """What the use-cases work with."""

    settings: ControllerSettings
    store: Store
    queue: JobQueue
    events: Events
    storage: ObjectStore
    counters: Counters = field(default_factory=Counters)
