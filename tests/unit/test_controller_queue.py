"""The Celery adapter, on a real Celery app over kombu's in-memory transport."""

from crossfarm.controller.queue import CeleryJobQueue
from crossfarm.shared.broker import create_celery
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.wire import CargoSpec, JobMessage

QUEUE = "crossfarm.builds.amd64"


def _sent(message):
    app = create_celery("memory://", visibility_timeout_s=3600)
    CeleryJobQueue(app).enqueue(message, QueueKey.parse(QUEUE))
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue(QUEUE)
        try:
            received = queue.get(timeout=1)
            received.ack()
            return received.headers, received.payload
        finally:
            queue.close()


def test_a_jobs_variables_travel_in_the_body_but_never_in_the_headers_workers_log():
    message = JobMessage(
        job_id="j-000000000000000a", build_id="b-0123456789abcdef",
        target="x86_64-unknown-linux-gnu", attempt=2, source="0" * 64, cargo=CargoSpec(),
        timeout_s=60, env={"TOKEN": "s3cret-abc"})

    headers, (args, _, _) = _sent(message)

    assert JobMessage.model_validate(args[0]) == message
    assert headers["id"] == "j-000000000000000a-2"
    assert "s3cret-abc" not in repr(headers)
    assert headers["argsrepr"] == "[job j-000000000000000a attempt 2]"
