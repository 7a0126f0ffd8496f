"""A build's event stream in a real Redis: made by its first event, closed by its end
(nothing appended after it), kept `ended_ttl_s` once ended, bounded while it runs.
Only a Redis server of the test's own, started with the farm launcher."""

from __future__ import annotations

import asyncio

import farm as localfarm  # the launcher's folder is on the path (conftest.py)
import pytest
import redis

from crossfarm.shared import keys
from crossfarm.shared.events import RETENTION_S, EventReader, Events
from crossfarm.shared.ids import BuildId
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import Event

pytestmark = pytest.mark.integration

BUILD = BuildId("b-00000000000000e1")
X86 = "x86_64-unknown-linux-gnu"
ENDED_TTL_S = 3600


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    only_redis = localfarm.Farm(dir=tmp_path_factory.mktemp("redis"))
    only_redis.start_redis()
    yield only_redis
    only_redis.stop()


@pytest.fixture
def events(server):
    made = Events(server.redis_url, ended_ttl_s=ENDED_TTL_S)
    yield made
    made.close()


@pytest.fixture
def db(server):
    client = redis.Redis.from_url(server.redis_url)
    client.flushdb()
    yield client
    client.close()


def _log(line):
    return Event(kind="log", target=X86, line=line)


def test_no_stream_exists_until_the_first_event(events, db):
    assert db.exists(keys.events_stream(BUILD)) == 0
    events.append(BUILD, _log("hello"))
    assert db.xlen(keys.events_stream(BUILD)) == 1


def test_a_running_build_keeps_its_stream_for_the_retention(events, db):
    events.append(BUILD, _log("hello"))
    assert ENDED_TTL_S < db.ttl(keys.events_stream(BUILD)) <= RETENTION_S


def test_the_end_sets_the_stream_to_expire_after_the_ended_ttl(events, db):
    events.append(BUILD, _log("hello"))
    events.append(BUILD, Event(kind="end", state=BuildState.SUCCEEDED))
    for key in (keys.events_stream(BUILD), keys.events_bytes(BUILD)):
        assert 0 < db.ttl(key) <= ENDED_TTL_S


def test_nothing_is_appended_after_the_end_and_the_expiry_stays(events, db):
    events.append(BUILD, Event(kind="end", state=BuildState.CANCELLED))
    assert events.append(BUILD, _log("a cancelled container's last words")) is None
    assert events.append(BUILD, Event(kind="state", target=X86, state=BuildState.FAILED)) is None
    assert db.xlen(keys.events_stream(BUILD)) == 1
    assert db.ttl(keys.events_stream(BUILD)) <= ENDED_TTL_S


def test_the_end_entry_reads_back_as_the_end_event(events, db, server):
    events.append(BUILD, _log("hello"))
    events.append(BUILD, Event(kind="end", state=BuildState.SUCCEEDED))

    async def read():
        reader = EventReader(server.redis_url)
        try:
            return await reader.read(BUILD, "0-0", block_ms=0)
        finally:
            await reader.close()

    assert [e for _, e in asyncio.run(read())] == [
        _log("hello"), Event(kind="end", state=BuildState.SUCCEEDED)]


def test_a_read_that_may_not_wait_returns_nothing_when_nothing_follows(events, db, server):
    events.append(BUILD, _log("hello"))

    async def read(build_id, after):
        reader = EventReader(server.redis_url)
        try:
            return await reader.read(build_id, after, block_ms=0)
        finally:
            await reader.close()

    [(last, _)] = asyncio.run(read(BUILD, "0-0"))
    assert asyncio.run(read(BUILD, last)) == []  # BLOCK 0 would have waited for ever
    assert asyncio.run(read(BuildId("b-00000000000000e2"), "0-0")) == []  # no stream at all


def test_log_lines_past_the_byte_bound_are_dropped_after_one_notice(events, db):
    for n in range(20):
        events.append(BUILD, _log(f"line {n:02d} " + "x" * 80), max_log_bytes=1000)
    lines = [Event.model_validate_json(f[b"e"]).line
             for _, f in db.xrange(keys.events_stream(BUILD))]
    assert 5 <= len(lines) <= 12
    assert "passed 1000 bytes" in lines[-1]
