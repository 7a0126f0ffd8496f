"""Group commit on a real SQLite database: writes that arrive while one transaction runs
share the next one, in arrival order; each caller gets its own result or its own error;
nothing accepted is lost when the store closes.

Batches are made deterministic without timing: the first transaction waits at a gate
until the test has seen the others queue behind it (polled with a generous deadline)."""

import threading
import time

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from crossfarm.controller.store import Store, migrations
from crossfarm.controller.store.builds import NewBuild, NewJob
from crossfarm.controller.store.group_commit import (
    Failed,
    GroupCommit,
    StoreClosed,
    prepare_then_batch,
)
from crossfarm.controller.store.schema import Database, MetaRow
from crossfarm.shared.arch import Arch
from crossfarm.shared.ids import new_build_id, new_job_id
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import CargoSpec

DEADLINE_S = 30


def _until(condition, what):
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


class Recorder:
    """An `apply` that stores (key, value) pairs in crossfarm_meta, records each batch it
    was given, and holds its first batch at `gate` until the test opens it."""

    def __init__(self):
        self.batches = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self, session, items):
        self.batches.append([key for key, _ in items])
        if len(self.batches) == 1:
            self.entered.set()
            assert self.gate.wait(DEADLINE_S)
        session.execute(insert(MetaRow), [{"key": k, "value": v} for k, v in items])
        return [f"stored {key}" for key, _ in items]


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path}/db.sqlite"
    migrations.prepare(url, migrate=False)  # an empty database gets the newest tables
    db = Database(url)
    yield db
    db.close()


def _stored(db):
    with db.session() as session:
        return {key: value for key, value in session.execute(select(MetaRow.key, MetaRow.value))}


class Callers:
    """Threads that each write one item, started one at a time in a known order."""

    def __init__(self, group):
        self.group = group
        self.results = {}
        self.threads = []

    def start(self, key, value="v"):
        def run():
            try:
                self.results[key] = self.group.write((key, value))
            except Exception as exc:  # the caller's own error is its answer
                self.results[key] = exc

        thread = threading.Thread(target=run)
        self.threads.append(thread)
        before = self.group.pending()
        thread.start()
        return before

    def start_queued(self, key, value="v"):
        """Start a caller and wait until its write queues behind the running batch."""
        before = self.start(key, value)
        _until(lambda: self.group.pending() == before + 1, f"{key} to queue")

    def join(self):
        for thread in self.threads:
            thread.join(DEADLINE_S)
            assert not thread.is_alive()


def _held_first_batch(db, recorder):
    group = GroupCommit(db, recorder)
    callers = Callers(group)
    callers.start("first")
    assert recorder.entered.wait(DEADLINE_S)
    return group, callers


def test_writes_that_arrive_while_a_transaction_runs_share_the_next_one_in_arrival_order(db):
    recorder = Recorder()
    group, callers = _held_first_batch(db, recorder)
    for key in ["b", "c", "a", "d"]:
        callers.start_queued(key)
    recorder.gate.set()
    callers.join()
    assert recorder.batches == [["first"], ["b", "c", "a", "d"]]
    assert (group.batches, group.writes) == (2, 5)
    assert set(_stored(db)) >= {"first", "a", "b", "c", "d"}


def test_each_caller_gets_its_own_result(db):
    recorder = Recorder()
    _, callers = _held_first_batch(db, recorder)
    for key in ["x", "y", "z"]:
        callers.start_queued(key)
    recorder.gate.set()
    callers.join()
    assert callers.results == {key: f"stored {key}"
                               for key in ["first", "x", "y", "z"]}


def test_one_bad_write_fails_alone_and_the_others_of_its_batch_commit(db):
    with db.session() as session:
        session.execute(insert(MetaRow), [{"key": "taken", "value": "kept"}])
    recorder = Recorder()
    _, callers = _held_first_batch(db, recorder)
    callers.start_queued("ok-1", "one")
    callers.start_queued("taken", "a key that exists: refused by the database")
    callers.start_queued("ok-2", "two")
    recorder.gate.set()
    callers.join()
    assert isinstance(callers.results["taken"], IntegrityError)
    assert callers.results["ok-1"] == "stored ok-1"
    assert callers.results["ok-2"] == "stored ok-2"
    stored = _stored(db)
    assert (stored["ok-1"], stored["ok-2"]) == ("one", "two")
    assert stored["taken"] == "kept"
    # the shared try, then each of the three alone, in arrival order
    assert recorder.batches[1:] == [["ok-1", "taken", "ok-2"],
                                    ["ok-1"], ["taken"], ["ok-2"]]


def test_a_write_that_fails_alone_raises_its_own_error_and_stores_nothing(db):
    def refuse(session, items):
        session.execute(insert(MetaRow), [{"key": "half", "value": "written"}])
        raise ValueError("refused after half a write")

    group = GroupCommit(db, refuse)
    with pytest.raises(ValueError, match="refused after half a write"):
        group.write(("k", "v"))
    assert "half" not in _stored(db)
    assert (group.batches, group.writes) == (0, 0)


def test_an_apply_that_answers_too_few_results_commits_nothing(db):
    group = GroupCommit(db, lambda session, items: [
        session.execute(insert(MetaRow), [{"key": k, "value": v} for k, v in items])])
    group.write(("one", "v"))  # one item, one result: fine
    recorder_less = GroupCommit(db, lambda session, items: (
        session.execute(insert(MetaRow), [{"key": k, "value": v} for k, v in items]), [])[1])
    with pytest.raises(RuntimeError, match="a batch of 1 writes gave 0 results"):
        recorder_less.write(("two", "v"))
    assert "one" in _stored(db)
    assert "two" not in _stored(db)


def test_close_waits_for_every_accepted_write_then_refuses_new_ones(db):
    recorder = Recorder()
    group, callers = _held_first_batch(db, recorder)
    for key in ["p", "q"]:
        callers.start_queued(key)
    closed = threading.Event()
    closer = threading.Thread(target=lambda: (group.close(), closed.set()))
    closer.start()
    _until(lambda: group.closed, "close to begin")
    # Refused at once, while the accepted writes still wait behind the gate.
    with pytest.raises(StoreClosed):
        group.write(("late", "v"))
    assert not closed.is_set()
    recorder.gate.set()
    closer.join(DEADLINE_S)
    assert closed.is_set()
    # close returned: every accepted write has committed and its caller has its answer
    assert {"first", "p", "q"} <= set(_stored(db))
    callers.join()
    assert callers.results == {"first": "stored first", "p": "stored p", "q": "stored q"}
    assert "late" not in _stored(db)


def test_a_group_takes_at_most_max_batch_writes_per_transaction(db):
    recorder = Recorder()
    group = GroupCommit(db, recorder, max_batch=2)
    callers = Callers(group)
    callers.start("first")
    assert recorder.entered.wait(DEADLINE_S)
    for key in ["a", "b", "c", "d", "e"]:
        callers.start_queued(key)
    recorder.gate.set()
    callers.join()
    assert recorder.batches == [["first"], ["a", "b"], ["c", "d"], ["e"]]


def test_one_callers_many_writes_are_committed_in_its_order_each_with_its_own_answer(db):
    recorder = Recorder()
    group, callers = _held_first_batch(db, recorder)
    answers = []
    mine = threading.Thread(target=lambda: answers.extend(
        group.write_many([("m1", "v"), ("first", "again"), ("m3", "v")])))
    mine.start()
    _until(lambda: group.pending() == 3, "the three writes to queue")
    callers.start_queued("after")
    recorder.gate.set()
    mine.join(DEADLINE_S)
    callers.join()
    # "first" again breaks the shared transaction's key: it fails alone, on retry
    assert recorder.batches[:2] == [["first"], ["m1", "first", "m3", "after"]]
    assert answers[0] == "stored m1"
    assert answers[2] == "stored m3"
    assert isinstance(answers[1], Failed)
    assert isinstance(answers[1].error, IntegrityError)
    assert callers.results["after"] == "stored after"
    assert {"m1", "m3", "after"} <= set(_stored(db))


def test_many_writes_of_one_caller_past_max_batch_are_cut_into_batches(db):
    recorder = Recorder()
    recorder.gate.set()
    group = GroupCommit(db, recorder, max_batch=2)
    answers = group.write_many([(f"k{n}", "v") for n in range(5)])
    assert answers == [f"stored k{n}" for n in range(5)]
    assert recorder.batches == [["k0", "k1"], ["k2", "k3"], ["k4"]]


def test_a_batch_size_under_one_is_refused():
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        GroupCommit(None, lambda session, items: [], max_batch=0)


def _build(target="aarch64-unknown-linux-gnu"):
    return NewBuild(
        build_id=new_build_id(), source="0123456789abcdef" * 4, cargo=CargoSpec(),
        timeout_s=60, env={}, submitter="ada",
        jobs=[NewJob(job_id=new_job_id(), target=target, arch=Arch.ARM64,
                     queue=QueueKey.parse("crossfarm.builds.arm64"), placement="native",
                     placed="native", waiting=None, wait_limit_s=None)])


def test_builds_submitted_at_once_from_many_threads_are_each_recorded_with_their_jobs(
        tmp_path):
    store = Store(f"sqlite:///{tmp_path}/db.sqlite")
    builds = [_build() for _ in range(40)]
    views = {}
    start = threading.Barrier(8)

    def submit(mine):
        start.wait(DEADLINE_S)
        for new in mine:
            views[new.build_id] = store.builds.add(new)

    threads = [threading.Thread(target=submit, args=(builds[n::8],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S)
    assert set(views) == {new.build_id for new in builds}
    for new in builds:
        view = store.builds.get(new.build_id)
        assert [job.job_id for job in view.jobs] == [new.jobs[0].job_id]
        assert view.jobs[0].state is BuildState.QUEUED
        # What the submit answered, but for the place in line: a build queued just
        # before it may have committed after it answered.
        assert view.model_dump(exclude={"jobs"}) == views[new.build_id].model_dump(
            exclude={"jobs"})
    # each held job has its own place in line: 40 jobs, places 1 to 40
    places = sorted(int(store.builds.get(new.build_id).jobs[0].waiting.rsplit("position ")[1]
                        .split()[0]) for new in builds)
    assert places == list(range(1, 41))
    store.close()


def test_a_closed_store_refuses_a_build_and_records_nothing_of_it(tmp_path):
    url = f"sqlite:///{tmp_path}/db.sqlite"
    store = Store(url)
    kept = store.builds.add(_build())
    store.close()
    with pytest.raises(StoreClosed, match="retry it once the controller is back"):
        store.builds.add(_build())
    reopened = Store(url)
    assert [view.build_id for view in reopened.builds.page(10).builds] == [kept.build_id]
    reopened.close()


def _parse(text):
    return int(text)


def test_prepare_then_batch_keeps_each_failure_in_its_place_and_batches_the_rest_once():
    batches = []

    def halve(numbers):  # odd numbers are refused by the batch, the rest answered
        batches.append(numbers)
        return [Failed(ValueError(f"{n} is odd")) if n % 2 else n // 2 for n in numbers]

    outcomes = prepare_then_batch(["4", "x", "3", "10", "y"], _parse, halve)
    assert batches == [[4, 3, 10]]  # one call, prepared items only, in order
    assert [o if isinstance(o, tuple) else str(o.error) for o in outcomes] == [
        (4, 2), "invalid literal for int() with base 10: 'x'", "3 is odd", (10, 5),
        "invalid literal for int() with base 10: 'y'"]


def test_prepare_then_batch_with_nothing_prepared_still_asks_the_batch_once():
    batches = []
    outcomes = prepare_then_batch(["x"], _parse, lambda ready: batches.append(ready) or [])
    assert batches == [[]]
    [failed] = outcomes
    assert isinstance(failed.error, ValueError)


def test_prepare_then_batch_refuses_a_batch_that_answers_too_few():
    with pytest.raises(RuntimeError, match="a batch of 2 gave 1 answers"):
        prepare_then_batch(["1", "2"], _parse, lambda ready: ready[:1])
