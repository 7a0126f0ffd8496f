"""The controller's real app and real SQLite store, with the broker, the event streams
and the object store faked: what the API tests of the unit tier talk to."""

from __future__ import annotations

import asyncio

import httpx
from fakes import FakeStorage

from crossfarm.controller.app import create_app
from crossfarm.controller.farm import Farm
from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store import Store


class FakeQueue:
    """Records each (message, queue name) sent to the broker, and each git fetch asked
    for; `worker`, if set, is called with each fetch as a worker would take it."""

    def __init__(self):
        self.sent = []
        self.fetches = []
        self.worker = None

    def enqueue(self, message, queue, worker=None):
        self.sent.append((message, queue.name if worker is None else f"{queue.name}@{worker}"))

    def fetch(self, message, expires_s):
        self.fetches.append(message)
        if self.worker is not None:
            self.worker(message)


class FakeEvents:
    """Build streams, cancel flags and attempts in lists; with `broker` (a FakeQueue),
    queue depths as the broker would count them."""

    def __init__(self, broker=None):
        self.broker = broker
        self.appended = []
        self.cancelled = []
        self.attempts = {}
        self.replies = {}
        #: what ping raises (a BrokerError while "Redis" is down), None: it answers
        self.down = None

    def ping(self):
        if self.down is not None:
            raise self.down
        return True

    def append(self, build_id, event, if_exists=False):
        if if_exists and all(b != build_id for b, _ in self.appended):
            return None
        self.appended.append((build_id, event))
        return f"{len(self.appended)}-0"

    def raise_cancel(self, job_id):
        self.cancelled.append(job_id)

    def reply(self, key, body, ttl_s=600):
        self.replies.setdefault(key, []).append(body)

    def wait_reply(self, key, timeout_s):
        waiting = self.replies.get(key)
        return waiting.pop(0) if waiting else None

    def set_attempt(self, job_id, attempt):
        self.attempts[job_id] = attempt

    def queue_depth(self, queue):
        # The broker's view: every message sent to that queue and still there.
        return sum(1 for _, sent_to in self.broker.sent if sent_to == queue) if self.broker else 0

    def logs(self):
        return [event.line for _, event in self.appended if event.kind == "log"]


class FakeEventReader:
    """The SSE route's reader: the appended events of one build, in order."""

    def __init__(self, events):
        self._events = events

    async def read(self, build_id, after, block_ms):
        done = int(after.split("-")[0])
        return [(f"{n}-0", event) for n, (b, event) in enumerate(self._events.appended, 1)
                if b == build_id and n > done]

    async def close(self):
        pass


class Api:
    """Requests straight into the ASGI app, no server, as sync calls for readable tests.
    (Starlette's TestClient warns that it is deprecated with httpx; the transport is the
    same one it wraps.)"""

    def __init__(self, app, farm):
        self._app = app
        self.farm = farm

    def __getattr__(self, method):
        async def call(*args, **kwargs):
            transport = httpx.ASGITransport(app=self._app)
            async with httpx.AsyncClient(transport=transport, base_url="http://farm") as c:
                return await getattr(c, method)(*args, **kwargs)

        return lambda *args, **kwargs: asyncio.run(call(*args, **kwargs))


def make_api(tmp_path, storage=None, **settings) -> Api:
    """The real app on a fresh database in `tmp_path`; `.farm` is its farm. Its lifespan
    (real broker, object store, chores) is never started. `storage`: instead of an
    in-memory object store."""
    config = ControllerSettings(database_url=f"sqlite:///{tmp_path}/crossfarm.db", **settings)
    app = create_app(config)
    events = FakeEvents()
    farm = Farm(settings=config, store=Store(config.database_url), queue=FakeQueue(),
                events=events, storage=storage or FakeStorage())
    app.state.farm = farm
    app.state.event_reader = FakeEventReader(events)
    return Api(app, farm)
