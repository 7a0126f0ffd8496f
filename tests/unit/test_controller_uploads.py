"""The upload sweep: an unfinished multipart upload is kept only while the record says
its attempt runs; everything else under builds/ is aborted."""

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from crossfarm.controller import uploads
from crossfarm.shared import keys
from crossfarm.shared.ids import BuildId
from crossfarm.shared.states import BuildState
from crossfarm.shared.storage import PendingUpload
from crossfarm.shared.wire import JobView

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
BUILD = BuildId("b-0123456789abcdef")
GONE = BuildId("b-fedcba9876543210")


def _job(target, state, attempt):
    return JobView(job_id=f"j-{target[:6]}", target=target, arch="amd64",
                   queue="crossfarm.builds.amd64", state=state, attempt=attempt,
                   queued_at=datetime(2026, 1, 1, tzinfo=UTC))


def _key(target, attempt, build=BUILD):
    return keys.artifact_key(build, target, attempt, "big-binary")


@pytest.mark.parametrize(
    ("jobs", "key", "kept"),
    [
        ([_job(X86, BuildState.RUNNING, 2)], _key(X86, 2), True),
        ([_job(X86, BuildState.RUNNING, 2)], _key(X86, 1), False),   # superseded attempt
        ([_job(X86, BuildState.SUCCEEDED, 2)], _key(X86, 2), False),  # finished: garbage
        ([_job(X86, BuildState.FAILED, 2)], _key(X86, 2), False),
        ([_job(X86, BuildState.QUEUED, 3)], _key(X86, 2), False),    # re-queued
        ([_job(ARM, BuildState.RUNNING, 2)], _key(X86, 2), False),   # other target
        ([], _key(X86, 1), False),                                    # unknown build
        ([_job(X86, BuildState.RUNNING, 1)], "builds/not-an-output", False),
    ],
)
def test_an_upload_may_finish_only_while_its_attempt_runs(jobs, key, kept):
    assert uploads.may_finish(key, jobs) is kept


class Storage:
    def __init__(self, pending):
        self.pending, self.aborted = pending, []

    def pending_uploads(self, prefix):
        assert prefix == "builds/"
        return list(self.pending)

    def abort_upload(self, upload):
        self.aborted.append(upload)


class Jobs:
    def __init__(self, views):
        self.views = views

    def of_build(self, build_id):
        return [SimpleNamespace(view=view) for view in self.views.get(build_id, [])]


class Store:
    def __init__(self, views):
        self.jobs = Jobs(views)


def test_the_sweep_aborts_what_no_running_attempt_owns_and_counts_it():
    live = PendingUpload(_key(X86, 2), "live")
    stale = PendingUpload(_key(X86, 1), "stale")
    done = PendingUpload(_key(ARM, 1), "done")
    orphan = PendingUpload(_key(X86, 1, build=GONE), "orphan")
    storage = Storage([live, stale, done, orphan])
    farm = SimpleNamespace(storage=storage, store=Store({BUILD: [
        _job(X86, BuildState.RUNNING, 2), _job(ARM, BuildState.SUCCEEDED, 1)]}))

    assert uploads.sweep(farm) == 3
    assert storage.aborted == [stale, done, orphan]


def test_an_empty_store_sweeps_nothing():
    farm = SimpleNamespace(storage=Storage([]), store=Store({}))
    assert uploads.sweep(farm) == 0
