"""The controller's FastAPI app, built by a factory from typed settings."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from crossfarm.controller import auth, errors, expiry, limits, placer, uploads
from crossfarm.controller.api import admin as admin_api
from crossfarm.controller.api import builds as builds_api
from crossfarm.controller.api import credentials as credentials_api
from crossfarm.controller.api import jobs as jobs_api
from crossfarm.controller.api import observe as observe_api
from crossfarm.controller.api import sources as sources_api
from crossfarm.controller.api import targets as targets_api
from crossfarm.controller.api import workers as workers_api
from crossfarm.controller.api.submits import SubmitBatches
from crossfarm.controller.dashboard import apidocs
from crossfarm.controller.dashboard import routes as dashboard
from crossfarm.controller.farm import Doorbell, Farm
from crossfarm.controller.metrics import RequestTimer
from crossfarm.controller.queue import CeleryJobQueue
from crossfarm.controller.settings import ControllerSettings, load_settings
from crossfarm.controller.store import Store, migrations
from crossfarm.shared.arch import supported_targets
from crossfarm.shared.broker import create_celery
from crossfarm.shared.errors import StorageError
from crossfarm.shared.events import EventReader, Events
from crossfarm.shared.logs import configure as configure_logs
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
    celery = create_celery(settings.redis_url, visibility_timeout_s=settings.visibility_timeout_s,
                           task_events=settings.task_events)
    return Farm(
        settings=settings,
        store=Store(settings.database_url, settings.secrets_key.get_secret_value()
                    if settings.secrets_key else None, migrate=settings.migrate_on_start),
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
            asyncio.create_task(_every(running.settings.compile_cache_sweep_s, expiry.sweep,
                                       running)),
        ]
        # What start-up made (modules, the app, the adapters' clients) lives as long as the
        # process: out of the collector's sight, a full collection scans only what requests
        # made since. Each one scanned it all: 60-160 ms with every request stopped, the
        # whole of the submits' p99 under a burst (bench/api_load.py).
        gc.freeze()
        yield
        for chore in chores:
            chore.cancel()
        await app.state.event_reader.close()
        app.state.farm.store.close()

    # The docs' pages are served from local assets (dashboard/apidocs.py), not a CDN.
    app = FastAPI(title="crossfarm", version=crossfarm_version(), lifespan=lifespan,
                  description=_DESCRIPTION, docs_url=None, redoc_url=None)
    app.state.submits = SubmitBatches()
    errors.install(app)
    limits.install(app, settings)
    app.add_middleware(RequestTimer)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.include_router(sources_api.router)
    app.include_router(credentials_api.router)
    app.include_router(builds_api.router)
    app.include_router(jobs_api.router)
    app.include_router(workers_api.router)
    app.include_router(targets_api.router)
    app.include_router(admin_api.router)
    app.include_router(observe_api.router)
    apidocs.install(app)
    dashboard.install(app)

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="crossfarm-controller",
        description="The crossfarm controller, configured by CROSSFARM_* variables.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the API and place jobs (the default)")
    commands.add_parser("migrate", help="upgrade the database (CROSSFARM_DATABASE_URL) to "
                                        "this controller's schema, then exit")
    command = parser.parse_args(argv).command
    try:
        settings = load_settings()
    except ValidationError as exc:
        raise SystemExit(f"crossfarm controller: {exc}") from None
    try:
        if command == "migrate":
            done = migrations.upgrade(settings.database_url)
            print(f"crossfarm-controller: {_upgraded(done)}")
            return
        migrations.prepare(settings.database_url, settings.migrate_on_start)
    except (migrations.SchemaError, migrations.Unreachable) as exc:
        raise SystemExit(f"crossfarm controller: {exc}") from None
    _serve(settings)


def _upgraded(done: migrations.Upgraded) -> str:
    if done.before is None:
        return f"the database was empty: made at schema revision {done.after}"
    if done.before == done.after:
        return f"the database is at schema revision {done.after} already"
    return f"the database was upgraded from schema revision {done.before} to {done.after}"


def _serve(settings: ControllerSettings) -> None:
    import uvicorn

    problem = auth.settings_problem(settings)
    if problem:
        raise SystemExit(f"crossfarm controller: {problem}")
    configure_logs(settings.log_format)
    quiet_access_log()
    lean_log_records()
    # Keep-alive well past the workers' 5 s heartbeat: at uvicorn's default of 5 s the
    # server closed idle connections just as a worker reused them ("connection reset").
    # log_config=None: uvicorn's records go through our handler (text or JSON lines).
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                timeout_keep_alive=75, log_config=None)


#: Requests answered every few seconds by design: a line for each buried everything else.
_ROUTINE = re.compile(r'^(POST /v1/workers/[^/ ]+/heartbeat|GET /(healthz|readyz|metrics))'
                      r'(\?\S*)? ')


class RoutineRequests(logging.Filter):
    """Drops uvicorn's access line of a successful heartbeat, probe or scrape (a failed
    one is still logged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn's access record: (client, method, path, http version, status)
        if not isinstance(args, tuple) or len(args) != 5:
            return True
        _, method, path, _, status = args
        return not (isinstance(status, int) and status < 400
                    and _ROUTINE.match(f"{method} {path} "))


def quiet_access_log() -> None:
    logging.getLogger("uvicorn.access").addFilter(RoutineRequests())


def lean_log_records() -> None:
    """Records of this process skip what no line of ours prints (shared/logs.py's formats:
    time, level, logger, message, job): the caller's frame, thread and process, as the
    logging docs' "Optimization" section says to. Gathering them was about a fifth of the
    access log's cost, which is one record per request."""
    logging._srcfile = None  # (that section's own way to skip the caller's frame)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
