"""The one Celery configuration every process that talks to the broker uses, and the one
place that knows how Celery lays a queue out in Redis."""

from __future__ import annotations

from celery import Celery


def queue_lists(queue: str) -> list[str]:
    """The Redis lists holding a Celery queue's messages: kombu's Redis transport keeps
    one list per priority step beside the plain one, named with its own separator."""
    return [queue] + [f"{queue}\x06\x16{step}" for step in (3, 6, 9)]


def create_celery(broker_url: str, *, visibility_timeout_s: int, name: str = "crossfarm",
                  task_events: bool = False) -> Celery:
    """A Celery app configured for long builds on Redis.

    Redis redelivers any message not acked within the visibility timeout, even
    while its task still runs, so it must exceed the longest build plus its wait
    in the queue; acks are late and prefetch is one so a lost worker's job is
    redelivered and an idle worker never hoards jobs. `task_events` (CROSSFARM_TASK_EVENTS)
    makes workers and senders publish task events, which Flower shows.
    """
    app = Celery(name, broker=broker_url)
    # kombu sweeps for messages past their visibility timeout about every interval x
    # throttle seconds (100 s by default); a short timeout wants a matching sweep.
    short = visibility_timeout_s < 600
    app.conf.update(
        broker_transport_options={
            "visibility_timeout": visibility_timeout_s,
            "unacked_restore_interval": 1 if short else 10,
            "unacked_restore_throttle": 1 if short else 10,
        },
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue="crossfarm.default",
        worker_hijack_root_logger=False,
        worker_send_task_events=task_events,
        task_send_sent_event=task_events,
        enable_utc=True,
    )
    return app
