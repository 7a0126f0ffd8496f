"""Starts a worker: detects its architecture, picks its queues, runs Celery."""

from __future__ import annotations

import functools
import logging

from celery import Celery

from crossfarm.shared import keys
from crossfarm.shared.arch import Arch
from crossfarm.shared.broker import create_celery
from crossfarm.shared.events import Events
from crossfarm.shared.storage import S3Store
from crossfarm.worker import tasks
from crossfarm.worker.container import Docker
from crossfarm.worker.pipeline import Toolbox
from crossfarm.worker.reporter import Reporter
from crossfarm.worker.settings import WorkerSettings, load_settings


def queues_for(host: Arch, cross_arches: list[Arch]) -> list[str]:
    """The host architecture's queue first, then those it serves with a cross toolchain."""
    arches = list(dict.fromkeys([host, *cross_arches]))
    return [keys.queue_name(arch) for arch in arches]


def create_worker_app(settings: WorkerSettings) -> Celery:
    app = create_celery(settings.redis_url, visibility_timeout_s=settings.visibility_timeout_s)
    host = Arch.host()

    @functools.cache
    def toolbox() -> Toolbox:
        return Toolbox(
            settings=settings,
            host=host,
            docker=Docker(),
            storage=S3Store(settings.storage()),
            reporter=Reporter(settings.controller_url, settings.worker_token,
                              Events(settings.redis_url)),
        )

    tasks.register(app, toolbox)
    return app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    host = Arch.host()
    queues = queues_for(host, settings.cross_arches)
    app = create_worker_app(settings)
    logging.getLogger(__name__).info("worker %s (%s) consumes %s", settings.worker_name,
                                     host.value, ", ".join(queues))
    app.worker_main([
        "worker", "--loglevel=INFO", f"--concurrency={settings.concurrency}",
        f"--queues={','.join(queues)}", f"--hostname={settings.worker_name}@%h",
        "--without-gossip", "--without-mingle",
    ])
