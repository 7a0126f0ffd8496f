"""Starts a worker: detects its architecture, picks its queues, runs Celery.

`celery -A crossfarm.worker.app flower` (and `celery -A crossfarm.worker.app events`,
`… inspect active`) finds this module's `app`: a Celery app on the broker of the
CROSSFARM_* environment, made on that first access (a module `__getattr__`), never at
import. Set CROSSFARM_TASK_EVENTS=1 on the workers and the controller so Flower sees tasks.
"""

from __future__ import annotations

import functools
import logging
import shutil
import threading
from collections.abc import Callable

from celery import Celery, signals
from celery.worker import state as celery_state

from crossfarm.shared import keys
from crossfarm.shared.arch import Arch
from crossfarm.shared.broker import create_celery
from crossfarm.shared.events import Events
from crossfarm.shared.logs import configure as configure_logs
from crossfarm.shared.storage import S3Store
from crossfarm.worker import image_volumes, tasks
from crossfarm.worker.container import Docker
from crossfarm.worker.deps import Registry
from crossfarm.worker.egress import parse_networks
from crossfarm.worker.gitfetch import FetchTools
from crossfarm.worker.health import HealthServer, Pulse, readiness
from crossfarm.worker.heartbeat import (
    ConsumerWatchdog,
    ContainerReaper,
    DrainSwitch,
    Heartbeat,
    Ticker,
    describe,
)
from crossfarm.worker.images import served_queues
from crossfarm.worker.lease import Lease
from crossfarm.worker.pipeline import Toolbox
from crossfarm.worker.reporter import Reporter
from crossfarm.worker.settings import WorkerSettings, load_settings
from crossfarm.worker.toolchains import Toolchains


def queues_for(host: Arch, cross_arches: list[Arch], emulate_arches: list[Arch] | None = None
               ) -> list[str]:
    """The queues a worker consumes, its host architecture's first."""
    return list(served_queues(host, cross_arches, emulate_arches or []))


def running_tasks() -> set[str]:
    """The "<job>-<attempt>" task ids this worker holds (main process only)."""
    requests = [*celery_state.active_requests, *celery_state.reserved_requests]
    return {str(request.id) for request in requests}


def consumed_queues(settings: WorkerSettings, host: Arch, fetches: bool) -> list[str]:
    """Every queue the worker's consumer reads: its build queues, and git fetches if it has
    the fetcher image (`fetches`)."""
    builds = queues_for(host, settings.cross_arches, settings.emulate_arches)
    if settings.warm_bytes:  # affinity: the placer sends a project's builds back here
        builds += [keys.worker_queue(keys.QueueKey.parse(queue), settings.worker_name)
                   for queue in builds]
    return [*builds, keys.FETCH_QUEUE] if fetches else builds


def _heartbeat(app: Celery, settings: WorkerSettings, host: Arch, node: str,
               lease: Lease, fetches: bool, pulse: Pulse) -> Heartbeat:
    """Start this worker's heartbeat and its chores. Its clients are its own: the pool's
    are made after fork (toolbox) and must not be shared with the main process."""
    queues = consumed_queues(settings, host, fetches)

    def consume(on: bool) -> None:
        # Broadcast control reaches this very worker; the consumer changes its queues.
        # Waiting for the reply means the next heartbeat's "draining" is the truth.
        for queue in queues:
            if on:
                app.control.add_consumer(queue, destination=[node], reply=True, timeout=10)
            else:
                app.control.cancel_consumer(queue, destination=[node], reply=True, timeout=10)

    def consumer_answers() -> bool:
        # Answered from the consumer's own event loop: proof that it still runs.
        return bool(app.control.ping(destination=[node], timeout=3))

    name = settings.worker_name
    docker = Docker()
    reporter = Reporter(settings.controller_url, settings.worker_token, Events(settings.redis_url))
    reaper = ContainerReaper(docker, name, running_tasks)
    reaper.reap_leftovers()  # of an earlier life of this worker (killed mid-build), first
    watchdog = ConsumerWatchdog(name, consumer_answers, running_tasks)
    switch = DrainSwitch(name, consume, lambda: watchdog.stuck)
    toolchains = Toolchains(settings, docker)
    threading.Thread(target=_copy_images, args=(settings, toolchains.images()),
                     name="image-volumes", daemon=True).start()
    beat = Heartbeat(reporter, name,
                     lambda: describe(settings, host, docker.image_id(settings.builder_image),
                                      running_tasks(), toolchains.offers()),
                     switch, lease)
    Ticker(settings.heartbeat_s,
           [watchdog.check, beat.beat, reaper.reap_orphans, pulse.beat]).start()
    return beat


def _copy_images(settings: WorkerSettings, images: list[str]) -> None:
    """The start-up copy of each builder image's trees into volumes, where the setting
    wants them (worker/image_volumes.py); in a thread of its own, as no build waits for it."""
    log = logging.getLogger(__name__)
    try:
        docker = Docker()
        try:
            if image_volumes.wanted(settings.image_volumes, docker.storage_driver()):
                for image in images:
                    image_volumes.fill(docker, image, log.info)
        finally:
            docker.close()
    except Exception:  # the engine: builds read the images themselves meanwhile
        log.warning("the builder images' trees were not copied into volumes", exc_info=True)


def made_at_fork(make: Callable[[], object]) -> Callable[..., None]:
    """The handler that makes a pool process's build tools right after its fork, not on
    its first job (0.25 s of that job on a loaded machine). Tools that cannot be made
    yet are made again by the job, which then reports why: a start-up never fails."""
    def handler(**_: object) -> None:
        try:
            make()
        except Exception:  # the engine or a setting: the first job says it, as data
            logging.getLogger(__name__).warning("build tools not made at start-up",
                                                exc_info=True)

    return handler


def create_worker_app(settings: WorkerSettings, host: Arch, fetches: bool = False,
                      pulse: Pulse | None = None) -> Celery:
    """`pulse`: told each round of the heartbeat thread (the liveness probe reads it)."""
    app = create_celery(settings.redis_url, visibility_timeout_s=settings.visibility_timeout_s,
                        task_events=settings.task_events)
    pulse = pulse or Pulse()
    lease = Lease(settings.scratch_dir / "lease.json")
    lease.forget()  # before any pool process reads it

    @functools.cache
    def toolbox() -> Toolbox:
        docker = Docker()
        return Toolbox(
            settings=settings,
            host=host,
            docker=docker,
            storage=S3Store(settings.storage()),
            reporter=Reporter(settings.controller_url, settings.worker_token,
                              Events(settings.redis_url)),
            crates=Registry(settings.registry_url, settings.max_crate_bytes,
                            verify=str(settings.ca_bundle) if settings.ca_bundle else True),
            lease=lease,
            toolchains=Toolchains(settings, docker),
        )

    @functools.cache
    def fetch_tools() -> FetchTools:
        return FetchTools(settings=settings, docker=Docker(),
                          storage=S3Store(settings.storage()),
                          replies=Events(settings.redis_url),
                          networks=parse_networks(settings.git_allow_networks))

    tasks.register(app, toolbox, fetch_tools)

    beats: list[Heartbeat] = []

    def start_heartbeat(sender: object = None, **_: object) -> None:
        # In the main process, once Celery is consuming (sender is its consumer).
        node = str(getattr(sender, "hostname", ""))
        beats.append(_heartbeat(app, settings, host, node, lease, fetches, pulse))

    def shutting_down(**_: object) -> None:
        for beat in beats:
            beat.shutting_down()

    signals.worker_ready.connect(start_heartbeat, weak=False)
    signals.worker_shutting_down.connect(shutting_down, weak=False)
    signals.worker_process_init.connect(made_at_fork(toolbox), weak=False,
                                        dispatch_uid=f"ready-to-build-{id(app)}")
    return app


def serve_health(settings: WorkerSettings, pulse: Pulse) -> HealthServer | None:
    """Start /healthz and /readyz unless CROSSFARM_HEALTH_PORT is 0; a port already taken
    stops the worker with what to change."""
    if not settings.health_port:
        return None
    try:
        server = HealthServer(settings.health_host, settings.health_port, readiness(settings),
                              pulse, within_s=max(6 * settings.heartbeat_s, 60))
    except OSError as exc:
        raise SystemExit(
            f"crossfarm-worker: cannot serve health on {settings.health_host}:"
            f"{settings.health_port}: {exc.strerror or exc}; set CROSSFARM_HEALTH_PORT to a "
            "free port (each worker on a host needs its own), or 0 for none") from None
    server.start()
    return server


def __getattr__(name: str) -> Celery:
    """The `app` (or `celery`) Celery's `-A crossfarm.worker.app` looks for, for Flower and
    Celery's own tools: made from the environment on first access, then kept."""
    if name not in ("app", "celery"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    settings = load_settings()
    made = create_celery(settings.redis_url, visibility_timeout_s=settings.visibility_timeout_s,
                         task_events=settings.task_events)
    globals().update(app=made, celery=made)
    return made


def main() -> None:
    settings = load_settings()
    configure_logs(settings.log_format)
    if settings.job_disk_bytes and not shutil.which("losetup"):
        raise SystemExit("crossfarm-worker: CROSSFARM_JOB_DISK_BYTES needs losetup (util-linux) "
                         "and a worker that may attach loop devices (root); install it, or set "
                         "CROSSFARM_JOB_DISK_BYTES=0 to run with no disk budget "
                         "(docs/security.md)")
    host = Arch.host()
    fetches = bool(settings.fetcher_image) and Docker().has_image(settings.fetcher_image)
    if settings.fetcher_image and not fetches:
        logging.getLogger(__name__).warning(
            "no fetcher image %s: this worker fetches no git sources (make images)",
            settings.fetcher_image)
    queues = consumed_queues(settings, host, fetches)
    pulse = Pulse()
    serve_health(settings, pulse)
    app = create_worker_app(settings, host, fetches, pulse)
    logging.getLogger(__name__).info("worker %s (%s) consumes %s", settings.worker_name,
                                     host.value, ", ".join(queues))
    app.worker_main([
        "worker", "--loglevel=INFO", f"--concurrency={settings.concurrency}",
        f"--queues={','.join(queues)}", f"--hostname={settings.worker_name}@%h",
        "--without-gossip", "--without-mingle",
    ])
