"""What the stores keep between reads (Kept, WriteClock) is what a read would return:
a write of a table the value came from drops it at its commit, and a read made while a
write is open keeps nothing. Real SQLite; another thread stands for a concurrent request."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import update
from test_controller_store import ARM_JOB, BUILD, X86_JOB, _new_build

from crossfarm.controller.store import Store
from crossfarm.controller.store.jobs import Outcome
from crossfarm.controller.store.schema import JobRow, Kept, WriteClock
from crossfarm.shared.errors import NotFound
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import Role


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/db.sqlite")
    store.builds.add(_new_build())
    yield store
    store.close()


def test_a_build_read_twice_is_answered_from_memory_the_second_time(store):
    first = store.builds.get(BUILD)
    assert store.builds.kept(BUILD) is first
    assert store.builds.get(BUILD) is first


def test_a_finished_job_is_read_finished_by_the_very_next_read(store):
    store.builds.get(BUILD)
    for job in (X86_JOB, ARM_JOB):
        store.jobs.start(job, 1, worker="w1")
        store.jobs.finish(job, 1, Outcome(BuildState.SUCCEEDED, exit_code=0))
    assert store.builds.kept(BUILD) is None
    assert store.builds.get(BUILD).state is BuildState.SUCCEEDED


def test_a_kept_build_is_still_another_tenants_not_found(store):
    store.builds.get(BUILD)
    with pytest.raises(NotFound):
        store.builds.kept(BUILD, "globex")
    with pytest.raises(NotFound):
        store.builds.get(BUILD, "globex")


def test_a_read_made_while_another_thread_writes_the_table_is_not_kept(store):
    writing, done = threading.Event(), threading.Event()

    def hold_a_write_open():
        with store.db.session() as session:
            session.execute(update(JobRow).where(JobRow.id == X86_JOB).values(worker="w9"))
            writing.set()
            done.wait()

    writer = threading.Thread(target=hold_a_write_open)
    writer.start()
    writing.wait()
    try:
        assert store.db.clock.stamp(("jobs",)) is None
        store.builds.get(BUILD)
        assert store.builds.kept(BUILD) is None
        assert store.db.clock.stamp(("workers",)) is not None  # other tables are unaffected
    finally:
        done.set()
        writer.join()
    store.builds.get(BUILD)
    assert store.builds.kept(BUILD) is not None


def test_a_value_read_before_a_write_began_and_kept_after_it_is_dropped():
    clock = WriteClock()
    kept: Kept[str, int] = Kept(clock, ("jobs",))
    stamp = kept.stamp()
    clock.begin({"jobs"})
    clock.end({"jobs"})
    kept.keep(stamp, "answer", 41)
    assert kept.get("answer") is None
    kept.keep(kept.stamp(), "answer", 42)
    assert kept.get("answer") == 42


def test_a_clock_that_cannot_see_every_writer_keeps_nothing():
    clock = WriteClock(enabled=False)  # PostgreSQL: other controllers may write
    kept: Kept[str, int] = Kept(clock, ("jobs",))
    kept.keep(kept.stamp(), "answer", 42)
    assert kept.get("answer") is None


def test_a_revoked_tokens_record_is_not_kept_past_its_revocation(store):
    record = store.tokens.add("acme", Role.SUBMIT, "ci", "ab" * 32, None)
    assert store.tokens.by_hash("ab" * 32) == record
    assert store.tokens.kept("ab" * 32) == record
    store.tokens.revoke(record.id)
    assert store.tokens.kept("ab" * 32) is None
    assert store.tokens.by_hash("ab" * 32).revoked_at is not None
