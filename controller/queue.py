"""Sends jobs to their architecture's Celery queue, by task name (the controller
never imports worker code)."""

from __future__ import annotations

from typing import Protocol

from celery import Celery

from crossfarm.shared import keys
from crossfarm.shared.wire import JobMessage


class JobQueue(Protocol):
    def enqueue(self, message: JobMessage, queue: keys.QueueKey) -> None: ...


class CeleryJobQueue:
    """JobQueue on Celery over Redis."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def enqueue(self, message: JobMessage, queue: keys.QueueKey) -> None:
        # Celery otherwise puts a repr of the arguments, the variables' values with them,
        # in the message's headers, and workers pass it to every log record they make of
        # the task (as `extra`, which a structured log handler prints).
        self._app.send_task(
            keys.BUILD_TASK, args=[message.model_dump(mode="json")], queue=queue.name,
            task_id=keys.task_id(message.job_id, message.attempt),
            argsrepr=f"[job {message.job_id} attempt {message.attempt}]", kwargsrepr="{}",
        )
