"""Sends jobs to their architecture's Celery queue, by task name (the controller
never imports worker code)."""

from __future__ import annotations

from typing import Protocol

from celery import Celery

from crossfarm.shared import keys
from crossfarm.shared.wire import FetchMessage, JobMessage


class JobQueue(Protocol):
    def enqueue(self, message: JobMessage, queue: keys.QueueKey,
                worker: str | None = None) -> None: ...
    def fetch(self, message: FetchMessage, expires_s: float) -> None: ...


class CeleryJobQueue:
    """JobQueue on Celery over Redis."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def enqueue(self, message: JobMessage, queue: keys.QueueKey,
                worker: str | None = None) -> None:
        """To `queue`, or to `worker`'s own queue beside it (keys.worker_queue)."""
        name = queue.name if worker is None else keys.worker_queue(queue, worker)
        # Celery otherwise puts a repr of the arguments, the variables' values with them,
        # in the message's headers, and workers pass it to every log record they make of
        # the task (as `extra`, which a structured log handler prints).
        self._app.send_task(
            keys.BUILD_TASK, args=[message.model_dump(mode="json")], queue=name,
            task_id=keys.task_id(message.job_id, message.attempt),
            argsrepr=f"[job {message.job_id} attempt {message.attempt}]", kwargsrepr="{}",
        )

    def fetch(self, message: FetchMessage, expires_s: float) -> None:
        """Ask any worker to fetch a git commit; a message no worker took within
        `expires_s` is dropped (its requester has stopped waiting)."""
        self._app.send_task(
            keys.FETCH_TASK, args=[message.model_dump(mode="json")], queue=keys.FETCH_QUEUE,
            task_id=keys.fetch_task_id(message.fetch_id), expires=expires_s,
            argsrepr=f"[fetch {message.fetch_id}]", kwargsrepr="{}",
        )
