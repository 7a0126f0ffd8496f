"""Group commit: writes that arrive together share one transaction, so a burst of them
costs one commit (one turn of SQLite's single writer, one fsync on PostgreSQL) instead of
one each, and each caller returns only once the transaction holding its write committed.

    caller A ──┐   pending: [A, B, C]
    caller B ──┼─► the leader (the caller that found no one leading) takes what is
    caller C ──┘   pending, applies it in arrival order in one transaction, commits,
                   and wakes each caller with its own result or its own error

There is no thread of its own: the leader is one of the callers, and it leads only until
its own write is done, then hands the lead to the oldest caller still waiting. If the
shared transaction fails it is rolled back whole and each of its writes is retried alone,
so a bad write fails alone and no caller hears of a commit that did not happen.
`close` refuses new writes and returns once every write it accepted has committed or
failed, so nothing accepted is lost when the controller stops.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.orm import Session

from crossfarm.controller.store.schema import Database

_T = TypeVar("_T")
_R = TypeVar("_R")
_P = TypeVar("_P")

#: What one transaction takes at most: a commit waits for the whole batch, so a huge
#: burst is cut into batches, each committed as soon as it is written.
MAX_BATCH = 64


class StoreClosed(RuntimeError):
    """A write arrived after the store was closed (the controller is stopping): it was
    not recorded. Retry it against a running controller."""

    def __init__(self) -> None:
        super().__init__("the controller is stopping and recorded nothing of this request: "
                         "retry it once the controller is back")


class Failed:
    """A write of `write_many` that was not committed, and why."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def prepare_then_batch(items: Sequence[_T], prepare: Callable[[_T], _P],
                       batch: Callable[[list[_P]], Sequence[_R | Failed]]
                       ) -> list[tuple[_P, _R] | Failed]:
    """`prepare` each item alone, then hand every prepared one to `batch` in one call;
    for each item, in the order given, (what prepare made of it, what batch answered),
    or Failed: with what prepare raised (that item stays out of the batch, the others
    go on), or as batch answered it."""
    prepared: list[_P | Failed] = []
    for item in items:
        try:
            prepared.append(prepare(item))
        except Exception as exc:  # that item's own problem: it fails alone
            prepared.append(Failed(exc))
    ready = [made for made in prepared if not isinstance(made, Failed)]
    answers = batch(ready)
    if len(answers) != len(ready):
        raise RuntimeError(f"a batch of {len(ready)} gave {len(answers)} answers")
    answered = iter(answers)
    outcomes: list[tuple[_P, _R] | Failed] = []
    for made in prepared:
        if isinstance(made, Failed):
            outcomes.append(made)
            continue
        answer = next(answered)
        outcomes.append(answer if isinstance(answer, Failed) else (made, answer))
    return outcomes


class _Write(Generic[_T, _R]):
    """One caller's write, and how it ended."""

    __slots__ = ("_woken", "done", "error", "item", "leads", "result")

    def __init__(self, item: _T) -> None:
        self.item = item
        #: this caller runs batches now (set under the group's lock)
        self.leads = False
        self.done = False
        self.result: _R | None = None
        self.error: BaseException | None = None
        self._woken = threading.Event()

    def end(self, result: _R | None = None, error: BaseException | None = None) -> None:
        self.result, self.error, self.done = result, error, True

    def wake(self) -> None:
        self._woken.set()

    def wait(self) -> None:
        self._woken.wait()
        self._woken.clear()


class GroupCommit(Generic[_T, _R]):
    """Writes of one kind, committed in groups. `apply` writes a batch of items in the
    session it is given and returns one result per item, in order; it must not commit
    (the group does) and must be safe to run again on any one item alone."""

    def __init__(self, db: Database, apply: Callable[[Session, Sequence[_T]], Sequence[_R]],
                 max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._db = db
        self._apply = apply
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: deque[_Write[_T, _R]] = deque()
        self._leading = False
        self._closed = False
        #: notified when no one leads and nothing is pending
        self._idle = threading.Condition(self._lock)
        #: how many transactions committed and how many writes they held (for tests and
        #: benches: writes / batches is the grouping achieved)
        self.batches = 0
        self.writes = 0

    def write(self, item: _T) -> _R:
        """Write `item` with whatever else is pending; its result once committed. Raises
        what writing it alone raised, or StoreClosed after `close`."""
        [outcome] = self.write_many([item])
        if isinstance(outcome, Failed):
            raise outcome.error
        return outcome

    def write_many(self, items: Sequence[_T]) -> list[_R | Failed]:
        """Write `items`, in order, with whatever else is pending (one caller with a batch
        of its own: the API's submits); each one's result once committed, or Failed with
        what writing it alone raised. Raises StoreClosed after `close`, writing none."""
        entries: list[_Write[_T, _R]] = [_Write(item) for item in items]
        with self._lock:
            if self._closed:
                raise StoreClosed()
            self._pending.extend(entries)
            if entries and not self._leading:
                self._leading = entries[0].leads = True
        # Entries are pending in order, so one waited for is taken into a batch before
        # any later one of them could be handed the lead.
        for entry in entries:
            while not entry.done:
                if entry.leads:
                    self._lead(entry)
                else:
                    entry.wait()  # until its write ended or the lead was handed to it
        return [Failed(entry.error) if entry.error is not None
                else entry.result  # type: ignore[misc]  # _R itself may include None
                for entry in entries]

    def pending(self) -> int:
        """How many writes wait for a transaction (not those in one now)."""
        with self._lock:
            return len(self._pending)

    @property
    def closed(self) -> bool:
        """Whether `close` was called (new writes are refused)."""
        with self._lock:
            return self._closed

    def close(self) -> None:
        """Refuse new writes, and return once every accepted one has ended."""
        with self._lock:
            self._closed = True
            while self._leading or self._pending:
                self._idle.wait()

    def _lead(self, mine: _Write[_T, _R]) -> None:
        """Commit batches until `mine` is done, then hand the lead on (or give it up)."""
        try:
            while not mine.done:
                with self._lock:
                    batch = [self._pending.popleft()
                             for _ in range(min(self._max_batch, len(self._pending)))]
                self._commit(batch)
        finally:
            with self._lock:
                mine.leads = False
                if self._pending:
                    heir = self._pending[0]
                    heir.leads = True
                    heir.wake()
                else:
                    self._leading = False
                    self._idle.notify_all()

    def _commit(self, batch: list[_Write[_T, _R]]) -> None:
        """Write and commit `batch` in one transaction; if that fails, each write alone.
        Every write of the batch has ended when this returns, and its caller is woken."""
        try:
            try:
                with self._db.session() as session:
                    results = self._apply(session, [entry.item for entry in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"a batch of {len(batch)} writes gave "
                                           f"{len(results)} results")
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].end(error=exc)
                    return
                # One bad write (or a failed commit) must not sink the others: the whole
                # transaction was rolled back, so each is tried again on its own.
                for entry in batch:
                    self._commit([entry])
                return
            for entry, result in zip(batch, results, strict=True):
                entry.end(result=result)
            with self._lock:
                self.batches += 1
                self.writes += len(batch)
        finally:
            for entry in batch:
                if not entry.done:  # only if something beyond Exception cut this short
                    entry.end(error=RuntimeError("the batch holding this write was "
                                                 "interrupted; nothing of it was committed"))
                entry.wake()
