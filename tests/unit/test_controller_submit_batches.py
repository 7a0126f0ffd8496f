"""Submits taken on the event loop are recorded a batch per hop to the thread pool: those
that arrive while a batch is in the pool share the next one, in arrival order, and each
request gets its own answer. Batches are made deterministic without timing: the first
one waits at a gate until the test has seen the others queue behind it."""

import asyncio
import threading

import pytest

from crossfarm.controller.api.submits import SubmitBatches
from crossfarm.controller.builds import Submit
from crossfarm.controller.store.group_commit import Failed
from crossfarm.shared.errors import InvalidRequest
from crossfarm.shared.wire import BuildRequest

DEADLINE_S = 30
FARM = object()  # what the batches pass through to their recorder, untouched


def _submit(name):
    return Submit(BuildRequest(source="0" * 64, targets=["x86_64-unknown-linux-gnu"]),
                  tenant=name)


class Recorder:
    """Answers each submit with its tenant's name (or refuses the tenant "bad"), records
    each batch, and holds the first one at `gate` until the test opens it."""

    def __init__(self):
        self.batches = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self, farm, submits):
        assert farm is FARM
        self.batches.append([s.tenant for s in submits])
        if len(self.batches) == 1:
            self.entered.set()
            assert self.gate.wait(DEADLINE_S)
        return [Failed(InvalidRequest(f"{s.tenant} refused")) if s.tenant == "bad"
                else f"built for {s.tenant}" for s in submits]


async def _until(condition):
    for _ in range(DEADLINE_S * 100):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("gave up waiting")


async def _first_held_then(batches, recorder, names):
    """Submit "first", hold its batch in the pool, submit `names` behind it, then open."""
    first = asyncio.create_task(batches.submit(FARM, _submit("first")))
    await _until(recorder.entered.is_set)
    rest = [asyncio.create_task(batches.submit(FARM, _submit(name))) for name in names]
    await _until(lambda: len(batches._pending) == len(names))
    recorder.gate.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_submits_that_arrive_while_a_batch_is_in_the_pool_share_the_next_in_arrival_order():
    recorder = Recorder()
    answers = asyncio.run(_first_held_then(SubmitBatches(recorder), recorder,
                                           ["b", "c", "a"]))
    assert recorder.batches == [["first"], ["b", "c", "a"]]
    assert answers == ["built for first", "built for b", "built for c", "built for a"]


def test_a_refused_submit_raises_its_own_error_and_the_others_of_its_batch_are_answered():
    recorder = Recorder()
    answers = asyncio.run(_first_held_then(SubmitBatches(recorder), recorder,
                                           ["ok", "bad", "fine"]))
    assert answers[1:2] == ["built for ok"]
    assert isinstance(answers[2], InvalidRequest)
    assert answers[3] == "built for fine"


def test_a_batch_takes_at_most_max_batch_submits():
    recorder = Recorder()
    asyncio.run(_first_held_then(SubmitBatches(recorder, max_batch=2), recorder,
                                 ["a", "b", "c"]))
    assert recorder.batches == [["first"], ["a", "b"], ["c"]]


def test_a_recorder_that_fails_a_whole_batch_fails_each_of_its_submits_and_the_next_batch_runs():
    calls = []

    def broken_then_fine(farm, submits):
        calls.append(len(submits))
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return ["ok" for _ in submits]

    async def run():
        batches = SubmitBatches(broken_then_fine)
        with pytest.raises(RuntimeError, match="a bug"):
            await batches.submit(FARM, _submit("one"))
        return await batches.submit(FARM, _submit("two"))

    assert asyncio.run(run()) == "ok"


def test_a_batch_size_under_one_is_refused():
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        SubmitBatches(max_batch=0)
