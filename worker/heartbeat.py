"""Tells the controller this worker exists: once at start, then every few seconds."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from importlib import metadata

from crossfarm.shared import keys
from crossfarm.shared.arch import TARGETS, Arch
from crossfarm.shared.errors import ControllerError
from crossfarm.shared.wire import WorkerHeartbeat
from crossfarm.worker.images import served_queues
from crossfarm.worker.lease import Lease
from crossfarm.worker.reporter import Reporter
from crossfarm.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def describe(settings: WorkerSettings, host: Arch, image_id: str | None,
             running: set[str] | None = None) -> WorkerHeartbeat:
    """This worker as the fleet sees it: detected architecture, queues and how it serves them."""
    queues = served_queues(host, settings.cross_arches, settings.emulate_arches)
    arches = {keys.QueueKey.parse(queue).arch for queue in queues}
    try:
        version = metadata.version("crossfarm")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return WorkerHeartbeat(
        hostname=settings.hostname(), arch=host.value,
        queues=queues,
        cpus=settings.build_cpus, memory_bytes=settings.build_memory_bytes,
        builder_image=settings.builder_image, builder_image_id=image_id,
        targets=sorted(t for t, arch in TARGETS.items() if arch in arches),
        labels=settings.labels, version=version, concurrency=settings.concurrency,
        running=sorted(running or ()), interval_s=settings.heartbeat_s,
    )


class Heartbeat:
    """A daemon thread that posts this worker's description every `interval_s` seconds,
    and stops or resumes consuming when an operator drains or undrains it."""

    def __init__(self, reporter: Reporter, name: str, info: Callable[[], WorkerHeartbeat],
                 interval_s: float, consume: Callable[[bool], None],
                 housekeeping: Callable[[], None] | None = None,
                 consuming: Callable[[], bool] | None = None,
                 give_up_s: float = 45, exit: Callable[[int], None] = os._exit,
                 lease: Lease | None = None) -> None:
        self._reporter, self._name, self._info = reporter, name, info
        self._interval = interval_s
        self._consume = consume
        self._housekeeping = housekeeping
        self._consuming = consuming
        self._give_up_s = give_up_s
        self._exit = exit
        self._lease = lease
        self._last_consuming = time.monotonic()
        self._last_check = 0.0
        self._stuck = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._fresh = True
        self._asked_to_drain = False
        self._shutting_down = False
        self._thread = threading.Thread(target=self._run, name="crossfarm-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def shutting_down(self) -> None:
        """The worker got SIGTERM: say so at once, so no new job is placed on it."""
        self._shutting_down = True
        self.beat()

    def beat(self) -> None:
        with self._lock:
            info = self._info().model_copy(update={
                "draining": self._asked_to_drain or self._shutting_down or self._stuck})
            try:
                reply = self._reporter.heartbeat(self._name, info, fresh_start=self._fresh)
            except (ControllerError, OSError) as exc:
                log.warning("heartbeat to the controller failed: %s", exc)
                return
            self._fresh = False
            if self._lease is not None and reply.lost_after_s is not None:
                try:
                    self._lease.renewed(reply.lost_after_s)
                except OSError as exc:  # a full disk must not fence this worker's builds
                    log.warning("could not record the lease: %s", exc)
            if reply.drain != self._asked_to_drain and not self._shutting_down:
                log.info("%s: %s", self._name, "draining" if reply.drain else "taking jobs again")
                self._asked_to_drain = reply.drain
                self._consume(not reply.drain)

    def watch(self, now: float) -> None:
        """A worker whose consumer stopped (Celery can fail to recover from a broker restart)
        must not look online: after give_up_s without an answer it reports draining, and
        once nothing runs it exits non-zero for its supervisor to restart it."""
        if self._consuming is None or now - self._last_check < 10:
            return
        self._last_check = now
        if self._consuming():
            self._last_consuming, self._stuck = now, False
            return
        if now - self._last_consuming < self._give_up_s:
            return
        if not self._stuck:
            log.error("%s: its consumer has not answered for %.0f s; draining",
                      self._name, now - self._last_consuming)
            self._stuck = True
        if not self._info().running:
            log.error("%s: exiting for a restart: the broker consumer is gone", self._name)
            self._exit(3)

    def _run(self) -> None:
        while not self._stop.is_set():
            for chore in (lambda: self.watch(time.monotonic()), self.beat,
                          self._housekeeping):
                if chore is None:
                    continue
                try:
                    chore()
                except Exception:  # nothing may stop the heartbeat: it is the lease
                    log.exception("worker heartbeat chore failed")
            self._stop.wait(self._interval)
