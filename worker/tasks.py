"""The Celery task: parse the message, run the pipeline. Nothing else happens here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery, Task

from crossfarm.shared import keys
from crossfarm.shared.logs import job_context
from crossfarm.shared.wire import FetchMessage, JobMessage
from crossfarm.worker.gitfetch import FetchTools, fetch_source
from crossfarm.worker.pipeline import Toolbox, run_job


def register(app: Celery, toolbox: Callable[[], Toolbox],
             fetch_tools: Callable[[], FetchTools]) -> None:
    """Register the build and fetch tasks on `app`; the tools are built lazily, after the
    pool forks, so no Docker or HTTP connection is shared across processes."""

    @app.task(name=keys.BUILD_TASK, bind=True, acks_late=True)  # type: ignore[untyped-decorator]
    def build_job(self: Task, payload: dict[str, Any]) -> str | None:
        job = JobMessage.model_validate(payload)
        queue = (self.request.delivery_info or {}).get("routing_key") or "unknown"
        tools = toolbox()
        # Every line logged while this job runs, by any logger, names it (shared/logs.py).
        with job_context(build_id=job.build_id, job_id=job.job_id, attempt=job.attempt,
                         worker=tools.settings.worker_name, tenant=job.tenant):
            state = run_job(tools, job, consumed_from=queue)
        return state.value if state else None

    @app.task(name=keys.FETCH_TASK, acks_late=True)  # type: ignore[untyped-decorator]
    def fetch_git(payload: dict[str, Any]) -> None:
        message = FetchMessage.model_validate(payload)
        tools = fetch_tools()
        report = fetch_source(tools, message)
        tools.replies.reply(keys.fetch_reply(message.fetch_id),
                            report.model_dump_json(exclude_none=True))
