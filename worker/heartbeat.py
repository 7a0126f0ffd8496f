"""What a worker's main process does every few seconds, one piece per chore.

A `Ticker` runs the `ConsumerWatchdog` (is Celery's consumer still answering?), then the
`Heartbeat` (tell the controller this worker exists, renew the lease), so a consumer found
stuck is reported in the same round, then the `ContainerReaper` (remove containers no task
owns). The `DrainSwitch` decides whether the heartbeat says the worker is draining.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata

from crossfarm.shared import keys
from crossfarm.shared.arch import TARGETS, Arch
from crossfarm.shared.errors import ControllerError
from crossfarm.shared.wire import ToolchainOffer, WorkerHeartbeat, WorkerLimits
from crossfarm.worker.container import ContainerRunner
from crossfarm.worker.images import served_queues
from crossfarm.worker.lease import Lease
from crossfarm.worker.reporter import HeartbeatReporter
from crossfarm.worker.settings import WorkerSettings
from crossfarm.worker.warm import WarmShelf

log = logging.getLogger(__name__)


def describe(settings: WorkerSettings, host: Arch, image_id: str | None,
             running: set[str] | None = None,
             toolchains: list[ToolchainOffer] | None = None) -> WorkerHeartbeat:
    """This worker as the fleet sees it: detected architecture, queues and how it serves
    them, and the warm target dirs it keeps (as the placer's affinity keys)."""
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
        warm=(WarmShelf(settings.scratch_dir / "warm").affinities()
              if settings.warm_bytes else []),
        limits=WorkerLimits(
            memory_bytes=settings.build_memory_bytes, pids=settings.build_pids,
            cpus=settings.build_cpus, disk_bytes=settings.job_disk_bytes or None,
            tmpfs_bytes=settings.build_tmpfs_bytes,
            artifact_count=settings.artifact_max_count,
            artifact_bytes=settings.artifact_max_bytes,
            log_bytes=settings.log_max_bytes, log_line_bytes=settings.log_line_max_bytes,
        ),
        toolchains=toolchains or [],
    )


class DrainSwitch:
    """Whether this worker says it is draining: while an operator drains it, once it shuts
    down, or while its consumer is stuck. Only the operator's wish turns consuming off
    and on; the other two leave the consumer as it is."""

    def __init__(self, name: str, consume: Callable[[bool], None],
                 consumer_stuck: Callable[[], bool]) -> None:
        self._name, self._consume, self._consumer_stuck = name, consume, consumer_stuck
        self._operator_drains = False
        self._shutting_down = False

    @property
    def draining(self) -> bool:
        return self._operator_drains or self._shutting_down or self._consumer_stuck()

    def operator_wants(self, drain: bool) -> None:
        """The controller relayed the operator's wish; a worker shutting down keeps its
        consumer as it is, since the consumer is going away."""
        if drain == self._operator_drains or self._shutting_down:
            return
        log.info("%s: %s", self._name, "draining" if drain else "taking jobs again")
        self._operator_drains = drain
        self._consume(not drain)

    def shut_down(self) -> None:
        """The worker got SIGTERM: it drains from now on, whatever the operator says."""
        self._shutting_down = True


class ConsumerWatchdog:
    """A worker whose consumer stopped (Celery can fail to recover from a broker restart)
    must not look online: after `give_up_s` without an answer it is stuck (and reports
    draining), and once nothing runs it exits non-zero for its supervisor to restart it."""

    #: The consumer is asked at most once in this many seconds.
    EVERY_S = 10

    def __init__(self, name: str, answers: Callable[[], bool],
                 running: Callable[[], set[str]], give_up_s: float = 45,
                 exit: Callable[[int], None] = os._exit,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._name, self._answers, self._running = name, answers, running
        self._give_up_s, self._exit, self._clock = give_up_s, exit, clock
        self._last_answer = clock()
        self._last_check = 0.0
        self.stuck = False

    def check(self) -> None:
        now = self._clock()
        if now - self._last_check < self.EVERY_S:
            return
        self._last_check = now
        if self._answers():
            self._last_answer, self.stuck = now, False
            return
        if now - self._last_answer < self._give_up_s:
            return
        if not self.stuck:
            log.error("%s: its consumer has not answered for %.0f s; draining",
                      self._name, now - self._last_answer)
            self.stuck = True
        if not self._running():
            log.error("%s: exiting for a restart: the broker consumer is gone", self._name)
            self._exit(3)


class ContainerReaper:
    """Removes this worker's containers and volumes that belong to no task it runs: those
    an earlier life of it left (killed mid-build), and any orphaned since."""

    def __init__(self, docker: ContainerRunner, worker: str,
                 running: Callable[[], set[str]]) -> None:
        self._docker, self._worker, self._running = docker, worker, running

    def reap_leftovers(self) -> None:
        """At start, before any task: everything labelled with this worker goes."""
        if reaped := self._docker.reap(self._worker, set):
            log.warning("removed %d leftover container(s)/volume(s) of %s", reaped,
                        self._worker)

    def reap_orphans(self) -> None:
        if reaped := self._docker.reap(self._worker, self._running):
            log.warning("reaped %d orphan container(s)/volume(s)", reaped)


class Heartbeat:
    """Posts this worker's description to the controller, renews the lease with each
    acknowledgement, and hands the operator's drain wish to the switch."""

    def __init__(self, reporter: HeartbeatReporter, name: str,
                 info: Callable[[], WorkerHeartbeat], switch: DrainSwitch,
                 lease: Lease | None = None) -> None:
        self._reporter, self._name, self._info = reporter, name, info
        self._switch, self._lease = switch, lease
        # A SIGTERM beats from Celery's thread while the ticker may be beating.
        self._lock = threading.Lock()
        self._fresh = True
        #: what the last beat's failure said (None: it reached the controller), and how
        #: many beats failed in a row: beats are logged only when this changes
        self._failure: str | None = None
        self._failed = 0

    def shutting_down(self) -> None:
        """The worker got SIGTERM: say so at once, so no new job is placed on it."""
        self._switch.shut_down()
        self.beat()

    def beat(self) -> None:
        with self._lock:
            info = self._info().model_copy(update={"draining": self._switch.draining})
            try:
                reply = self._reporter.heartbeat(self._name, info, fresh_start=self._fresh)
            except (ControllerError, OSError) as exc:
                self._failed_with(str(exc))
                return
            if self._failure is not None or self._fresh:
                log.info("%s: heartbeats reach the controller%s", self._name,
                         f" again, after {self._failed} failed" if self._failed else "")
            self._failure, self._failed = None, 0
            self._fresh = False
            if self._lease is not None and reply.lost_after_s is not None:
                try:
                    self._lease.renewed(reply.lost_after_s)
                except OSError as exc:  # a full disk must not fence this worker's builds
                    log.warning("could not record the lease: %s", exc)
            self._switch.operator_wants(reply.drain)


    def _failed_with(self, said: str) -> None:
        """One line when beats start failing or fail otherwise, none for each repeat: a
        controller away for an hour is one warning, not 720."""
        self._failed += 1
        if said != self._failure:
            log.warning("%s: heartbeat to the controller failed: %s (logged again only "
                        "when this changes)", self._name, said)
        self._failure = said


class Ticker:
    """A daemon thread that runs its chores in order every `interval_s` seconds. A chore
    that fails is logged and the others still run: the heartbeat among them is the lease."""

    def __init__(self, interval_s: float, chores: Sequence[Callable[[], None]],
                 name: str = "crossfarm-heartbeat") -> None:
        self._interval, self._chores = interval_s, list(chores)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def tick(self) -> None:
        for chore in self._chores:
            try:
                chore()
            except Exception:  # nothing may stop the heartbeat: it is the lease
                log.exception("worker heartbeat chore failed")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self._interval)
