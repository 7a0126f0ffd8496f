"""The Redis adapter: a build's event stream, cancel flags and queue depths; the only
module that imports redis.

Each build has one Redis stream; its entry ids double as SSE event ids, so a
client that reconnects with Last-Event-ID resumes exactly where it stopped. A stream is
made by the first event appended to it (a queued build nobody watches has none), takes
nothing after its `end` event, and expires `ended_ttl_s` after it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import redis
import redis.asyncio

from crossfarm.shared import keys
from crossfarm.shared.broker import queue_lists
from crossfarm.shared.errors import BrokerError
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.wire import Event

P = ParamSpec("P")
R = TypeVar("R")

#: Streams and flags outlive their last write by this long, then Redis drops them: the
#: bound on a stream whose build never got its end event (Redis was away then).
RETENTION_S = 7 * 24 * 3600
#: How long a build's stream stays readable once its end event is in (the controller's
#: event_ttl_s setting).
ENDED_TTL_S = 3 * 24 * 3600
#: The largest value of either half of a stream entry id, "<ms>-<seq>".
_ID_PART_MAX = 2**64 - 1
#: Upper bounds on one build's stream, so a runaway log cannot fill Redis: a count, and
#: the bytes of log events (state changes always go in). Past the bytes, the stream says
#: so once and takes no more log lines; the stored log keeps every line.
MAX_EVENTS = 200_000
MAX_LOG_BYTES = 64 * 1024**2

# Atomic, so two workers' jobs of one build cannot both slip past the bound.
# KEYS: stream, byte counter. ARGV: event, its size, retention, byte bound, count bound,
# "1" if the event is a log line (may be dropped), the notice to append once instead,
# "1" if it is the build's end, the time the stream stays once ended, "1" to add only to
# a stream that exists (a line only a present follower needs).
# An end entry carries a second field, so the next append sees the stream is over: late
# lines (a cancelled build's container still printing) would only push its expiry back.
_APPEND = """
if ARGV[10] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then
    return false
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if last and #last[2] > 2 then
    return false
end
local ttl = ARGV[3]
if ARGV[8] == '1' then
    ttl = ARGV[9]
end
local total = redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ttl)
local event = ARGV[1]
if ARGV[6] == '1' and total > tonumber(ARGV[4]) then
    if total - tonumber(ARGV[2]) > tonumber(ARGV[4]) then
        return false
    end
    event = ARGV[7]
end
local id
if ARGV[8] == '1' then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', 'e', event, 'end', '1')
else
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', 'e', event)
end
redis.call('EXPIRE', KEYS[1], ttl)
return id
"""


def parse_event_id(text: str) -> tuple[int, int]:
    """The (milliseconds, sequence) of a stream entry id "<ms>-<seq>", as Redis makes them
    and SSE sends them; ValueError for anything else."""
    ms, dash, seq = text.partition("-")
    if not dash or not all(p.isascii() and p.isdigit() for p in (ms, seq)):
        raise ValueError(f"{text[:80]!r} is not an event id (<milliseconds>-<sequence>)")
    parts = (int(ms), int(seq))
    if max(parts) > _ID_PART_MAX:
        raise ValueError(f"{text[:80]!r} is out of an event id's range")
    return parts


def _translated(method: Callable[P, R]) -> Callable[P, R]:
    """Redis errors become BrokerError, so callers decide without importing redis."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except redis.exceptions.RedisError as exc:
            raise BrokerError(f"redis: {exc}") from exc

    return call


#: How long one call to Redis may take before it counts as failed.
_TIMEOUT_S = 2


class Events:
    """Append to a build's stream and raise or read cancel flags (blocking client).
    Every method raises BrokerError when Redis fails."""

    def __init__(self, redis_url: str, ended_ttl_s: int = ENDED_TTL_S) -> None:
        self._ended_ttl_s = ended_ttl_s
        # Every call here is short: a peer that stops answering (a cut link) must turn
        # into BrokerError within seconds, not hang a build's stop check for good.
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=_TIMEOUT_S,
                                           socket_connect_timeout=_TIMEOUT_S)
        self._append = self._redis.register_script(_APPEND)

    @_translated
    def append(self, build_id: BuildId, event: Event, max_log_bytes: int = MAX_LOG_BYTES,
               if_exists: bool = False) -> str | None:
        """Add an event; its entry id, or None for a log line past the stream's bound, any
        event after the stream's end, or (`if_exists`) a build with no stream yet."""
        body = event.model_dump_json(exclude_none=True)
        notice = Event(kind="log", target=event.target,
                       line=f"crossfarm: this build's live log passed {max_log_bytes} bytes; "
                            "the rest is in each target's stored log").model_dump_json(
                                exclude_none=True)
        entry_id = self._append(
            keys=[keys.events_stream(build_id), keys.events_bytes(build_id)],
            args=[body, len(body), RETENTION_S, max_log_bytes, MAX_EVENTS,
                  "1" if event.kind == "log" else "0", notice,
                  "1" if event.kind == "end" else "0", self._ended_ttl_s,
                  "1" if if_exists else "0"])
        if entry_id is None:
            return None
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    @_translated
    def raise_cancel(self, job_id: JobId) -> None:
        self._redis.set(keys.cancel_flag(job_id), b"1", ex=RETENTION_S)

    @_translated
    def is_cancelled(self, job_id: JobId) -> bool:
        return bool(self._redis.exists(keys.cancel_flag(job_id)))

    @_translated
    def set_attempt(self, job_id: JobId, attempt: int) -> None:
        """Publish a job's current attempt, so a worker still running an older one stops."""
        self._redis.set(keys.attempt_key(job_id), str(attempt), ex=RETENTION_S)

    @_translated
    def stop_reason(self, job_id: JobId, attempt: int) -> str | None:
        """Why a worker running `attempt` of a job must stop now, or None to go on."""
        cancelled, current = self._redis.mget(keys.cancel_flag(job_id), keys.attempt_key(job_id))
        if cancelled:
            return "cancelled"
        if current is not None and int(current) > attempt:
            return f"superseded by attempt {int(current)}"
        return None

    @_translated
    def reply(self, key: str, body: str, ttl_s: int = 600) -> None:
        """Leave an answer for whoever waits on `key` (see wait_reply)."""
        pipe = self._redis.pipeline()
        pipe.rpush(key, body)
        pipe.expire(key, ttl_s)
        pipe.execute()

    @_translated
    def wait_reply(self, key: str, timeout_s: float) -> str | None:
        """The answer left on `key`, waiting up to `timeout_s` for it; None if none came."""
        deadline = time.monotonic() + timeout_s
        # Short blocking reads: the client's socket timeout bounds each call.
        while (left := deadline - time.monotonic()) > 0:
            answer = self._redis.blpop([key], timeout=max(1, min(int(left), _TIMEOUT_S - 1)))
            if answer is not None:
                body = answer[1]
                return body.decode() if isinstance(body, bytes) else str(body)
        return None

    @_translated
    def queue_depth(self, queue: str) -> int:
        """Messages waiting in a Celery queue, over every Redis list the broker keeps for it."""
        pipe = self._redis.pipeline()
        for name in queue_lists(queue):
            pipe.llen(name)
        return sum(int(n) for n in pipe.execute())

    @_translated
    def ping(self) -> bool:
        return bool(self._redis.ping())

    def close(self) -> None:
        self._redis.close()


class EventReader:
    """Read a build's stream from a given entry id on (asyncio client, for SSE)."""

    def __init__(self, redis_url: str) -> None:
        # No socket timeout: a blocking XREAD legitimately waits for the whole block time.
        self._redis = redis.asyncio.Redis.from_url(redis_url, socket_timeout=None)

    async def read(
        self, build_id: BuildId, after: str, block_ms: int, count: int = 500
    ) -> list[tuple[str, Event]]:
        """The entries after `after`, waiting up to `block_ms` for one (0: not at all)."""
        try:
            answer: Any = await self._redis.xread(
                # BLOCK 0 is Redis's "for ever": no wait at all is no BLOCK
                {keys.events_stream(build_id): after}, count=count, block=block_ms or None
            )
        except (redis.exceptions.TimeoutError, redis.exceptions.ConnectionError):
            # Redis restarting or slow: the caller sends a keep-alive and asks again.
            await asyncio.sleep(1)
            return []
        entries: list[tuple[str, Event]] = []
        for _stream, items in answer or []:
            for entry_id, fields in items:
                eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                entries.append((eid, Event.model_validate_json(fields[b"e"])))
        return entries

    async def close(self) -> None:
        await self._redis.aclose()
