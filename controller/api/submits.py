"""Submits taken on the event loop and recorded a batch at a time:

    request A ──┐   pending: [A, B, C]          one hop to the thread pool:
    request B ──┼─► (each awaits its future) ─► builds.submit_many(A, B, C): each checked,
    request C ──┘                               all recorded in one transaction
                                                ◄─ each future gets its own view or error

A hop per request (a plain `def` route) cost the event loop about a tenth of a submit's
time, and its thread's wake-up as much again; and every request waiting in its own
thread for the shared commit made the threads fight over the GIL. A submit that
arrives while a batch is in the pool waits for the next one, which starts as soon as
that one ends. Nothing is decided here: quotas, checks and exactly-once recording are
submit_many's and the store's, in order of arrival.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from starlette.concurrency import run_in_threadpool

from crossfarm.controller import builds
from crossfarm.controller.builds import Submit
from crossfarm.controller.farm import Farm
from crossfarm.controller.store.group_commit import MAX_BATCH, Failed, StoreClosed
from crossfarm.shared.wire import BuildView

log = logging.getLogger(__name__)

#: What records a batch: builds.submit_many, one answer per submit in order.
Record = Callable[[Farm, Sequence[Submit]], Sequence[BuildView | Failed]]


class SubmitBatches:
    """The submits waiting for the thread pool, and the task taking them there (at most one
    at a time: a batch's submits are recorded in the order they arrived)."""

    def __init__(self, record: Record = builds.submit_many, max_batch: int = MAX_BATCH
                 ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._record = record
        self._max_batch = max_batch
        self._pending: list[tuple[Submit, asyncio.Future[BuildView]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, farm: Farm, submit: Submit) -> BuildView:
        """The build recorded for `submit`; raises what refused it."""
        answer: asyncio.Future[BuildView] = asyncio.get_running_loop().create_future()
        self._pending.append((submit, answer))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain(farm))
        return await answer

    async def _drain(self, farm: Farm) -> None:
        batch: list[tuple[Submit, asyncio.Future[BuildView]]] = []
        try:
            while self._pending:
                batch = self._pending[:self._max_batch]
                del self._pending[:self._max_batch]
                try:
                    outcomes = await run_in_threadpool(
                        self._record, farm, [submit for submit, _ in batch])
                except StoreClosed as exc:  # the controller stops: none was recorded
                    outcomes = [Failed(exc)] * len(batch)
                except Exception as exc:  # submit_many answers each one: this is a bug
                    log.exception("a batch of %d submits failed", len(batch))
                    outcomes = [Failed(exc)] * len(batch)
                for (_, answer), outcome in zip(batch, outcomes, strict=True):
                    if answer.done():  # its request went away; the build stands
                        continue
                    if isinstance(outcome, Failed):
                        answer.set_exception(outcome.error)
                    else:
                        answer.set_result(outcome)
        except BaseException:  # cancelled (the controller stops): no answer will come
            for _, answer in batch + self._pending:
                answer.cancel()  # (a no-op for one answered already)
            self._pending.clear()
            raise
        finally:
            self._drainer = None
