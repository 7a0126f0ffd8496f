"""The controller's FastAPI app, built by a factory from typed settings."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool

from crossfarm.controller import auth, errors, limits, placer, uploads
from crossfarm.controller.api import admin as admin_api
from crossfarm.controller.api import builds as builds_api
from crossfarm.controller.api import credentials as credentials_api
from crossfarm.controller.api import jobs as jobs_api
from crossfarm.controller.api import sources as sources_api
from crossfarm.controller.api import targets as targets_api
from crossfarm.controller.api import workers as workers_api
from crossfarm.controller.farm import Doorbell, Farm
from crossfarm.controller.queue import CeleryJobQueue
from crossfarm.controller.settings import ControllerSettings, load_settings
from crossfarm.controller.store import Store
from crossfarm.shared.arch import supported_targets
from crossfarm.shared.broker import create_celery
from crossfarm.shared.errors import StorageError
from crossfarm.shared.events import EventReader, Events
from crossfarm.shared.storage import S3Store
from crossfarm.shared.wire import API_VERSION, Event, Health, crossfarm_version

log = logging.getLogger(__name__)


def _ensure_bucket(storage: S3Store, wait_s: float = 60) -> None:
    """The object store may still be starting (its port answers before it serves):
    retry for a while before giving up the start-up."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            storage.ensure_bucket()
            return
        except StorageError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("object store not ready (%s); retrying", exc.message)
            time.sleep(1)


def create_farm(settings: ControllerSettings) -> Farm:
    """Connect the real adapters: SQL store, Celery queue, Redis events, S3."""
    storage = S3Store(settings.storage())
    _ensure_bucket(storage)
    celery = create_celery(settings.redis_url, visibility_timeout_s=settings.visibility_timeout_s)
    return Farm(
        settings=settings,
        store=Store(settings.database_url, settings.secrets_key.get_secret_value()
                    if settings.secrets_key else None),
        queue=CeleryJobQueue(celery),
        events=Events(settings.redis_url, ended_ttl_s=settings.event_ttl_s),
        storage=storage,
    )


#: The least time between two passes of a chore woken by its doorbell.
_RUNG_GAP_S = 0.05


async def _every(interval_s: float, chore: Callable[[Farm], object], farm: Farm,
                 doorbell: Doorbell | None = None) -> None:
    """Run a chore (the placer, the upload sweep) every interval, and at once when its
    doorbell rings; a failed pass is logged, never fatal."""
    if doorbell is not None:
        doorbell.bind()
    while True:
        try:
            await run_in_threadpool(chore, farm)
        except Exception:  # the next pass retries; the controller must keep serving
            log.exception("%s pass failed", chore.__module__)
        if doorbell is None:
            await asyncio.sleep(interval_s)
        else:
            # Rings coalesce: under a burst of submits a pass runs at most every
            # _RUNG_GAP_S, not back to back taking the thread pool from the requests.
            await asyncio.sleep(_RUNG_GAP_S)
            await doorbell.wait(interval_s)


_DESCRIPTION = """A self-hosted remote build farm for Rust: each target builds on a worker of
its native architecture.

Every error answers an RFC 9457 problem document (`application/problem+json`): `type`
(`https://crossfarm.dev/problems/<kind>`), `title`, `status`, `detail` (what went wrong and
what to do) and the fields of the error; see docs/errors.md for every kind."""


def create_app(settings: ControllerSettings, farm: Farm | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.farm = farm or create_farm(settings)
        app.state.event_reader = EventReader(settings.redis_url)
        running: Farm = app.state.farm
        auth.check_start(running.settings, running.store.tokens)
        chores = [
            asyncio.create_task(_every(running.settings.placer_interval_s, placer.tick, running,
                                       running.doorbell)),
            asyncio.create_task(_every(running.settings.upload_sweep_s, uploads.sweep, running)),
        ]
        yield
        for chore in chores:
            chore.cancel()
        await app.state.event_reader.close()
        app.state.farm.store.close()

    app = FastAPI(title="crossfarm", version=crossfarm_version(), lifespan=lifespan,
                  description=_DESCRIPTION)
    errors.install(app)
    limits.install(app, settings)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.include_router(sources_api.router)
    app.include_router(credentials_api.router)
    app.include_router(builds_api.router)
    app.include_router(jobs_api.router)
    app.include_router(workers_api.router)
    app.include_router(targets_api.router)
    app.include_router(admin_api.router)

    @app.get("/v1/health", tags=["health"], responses=errors.responses())
    def health() -> Health:
        """The controller is up; its version and API major version (a client warns when
        its own API version differs), and the targets it builds."""
        return Health(ok=True, version=crossfarm_version(), api=API_VERSION,
                      targets=supported_targets())

    return app


def _openapi(app: FastAPI) -> dict[str, object]:
    """FastAPI's schema, with every error a Problem and the events' data an Event."""
    if not app.openapi_schema:
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
        errors.add_component(schema, Event)  # the data of each event of the stream
        app.openapi_schema = errors.document(schema)
    return app.openapi_schema


def main() -> None:
    import uvicorn

    settings = load_settings()
    problem = auth.settings_problem(settings)
    if problem:
        raise SystemExit(f"crossfarm controller: {problem}")
    # Keep-alive well past the workers' 5 s heartbeat: at uvicorn's default of 5 s the
    # server closed idle connections just as a worker reused them ("connection reset").
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                timeout_keep_alive=75)
