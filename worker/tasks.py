"""The Celery task: parse the message, run the pipeline. Nothing else happens here."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

from celery import Celery, Task, signals
from pydantic import ValidationError

from crossfarm.shared import keys
from crossfarm.shared.logs import JobFields, bind_job, unbind_job
from crossfarm.shared.wire import FetchMessage, JobMessage
from crossfarm.worker.gitfetch import FetchTools, fetch_source
from crossfarm.worker.pipeline import Toolbox, run_job

log = logging.getLogger(__name__)


def register(app: Celery, toolbox: Callable[[], Toolbox],
             fetch_tools: Callable[[], FetchTools]) -> None:
    """Register the build and fetch tasks on `app`; the tools are built lazily, after the
    pool forks, so no Docker or HTTP connection is shared across processes."""

    @app.task(name=keys.BUILD_TASK, bind=True, acks_late=True)  # type: ignore[untyped-decorator]
    def build_job(self: Task, payload: dict[str, Any]) -> str | None:
        job = JobMessage.model_validate(payload)
        queue = (self.request.delivery_info or {}).get("routing_key") or "unknown"
        log.info("building %s, attempt %d, from %s", job.target, job.attempt, queue)
        state = run_job(toolbox(), job, consumed_from=queue)
        log.info("%s ended: %s", job.target, state.value if state else "not run")
        return state.value if state else None

    bound: dict[str, contextvars.Token[JobFields | None]] = {}

    def job_begins(task_id: str, task: Task, args: tuple[Any, ...] = (), **_: object) -> None:
        # From before the task to after Celery's own "succeeded"/"failed" line, every
        # record of the pool process, by any logger, names the job (shared/logs.py).
        if task.name != keys.BUILD_TASK or task.app is not app:
            return
        try:
            job = JobMessage.model_validate(args[0] if args else None)
        except ValidationError:
            return  # the task itself refuses it, and says why
        bound[task_id] = bind_job(JobFields(
            build_id=job.build_id, job_id=job.job_id, attempt=job.attempt,
            worker=toolbox().settings.worker_name, tenant=job.tenant))

    def job_ends(task_id: str, **_: object) -> None:
        token = bound.pop(task_id, None)
        if token is not None:
            unbind_job(token)

    # Celery's signals are process-wide; `build_job` is still a lazy proxy here, so the
    # handlers pick their own app's build tasks by name.
    signals.task_prerun.connect(job_begins, weak=False, dispatch_uid=f"job-begins-{id(app)}")
    signals.task_postrun.connect(job_ends, weak=False, dispatch_uid=f"job-ends-{id(app)}")

    @app.task(name=keys.FETCH_TASK, acks_late=True)  # type: ignore[untyped-decorator]
    def fetch_git(payload: dict[str, Any]) -> None:
        message = FetchMessage.model_validate(payload)
        tools = fetch_tools()
        report = fetch_source(tools, message)
        tools.replies.reply(keys.fetch_reply(message.fetch_id),
                            report.model_dump_json(exclude_none=True))
