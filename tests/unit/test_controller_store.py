from datetime import datetime

import pytest

from crossfarm.controller.store import NewBuild, NewJob, Store
from crossfarm.shared.errors import IllegalTransition, NotFound
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import ArtifactEntry, BuildMode, Manifest

BUILD = BuildId("b-0123456789abcdef")
X86_JOB = JobId("j-000000000000000a")
ARM_JOB = JobId("j-000000000000000b")
X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
DIGEST = "0123456789abcdef" * 4


def _new_build(build_id=BUILD):
    return NewBuild(
        build_id=build_id,
        source=DIGEST,
        profile="release",
        features=["tls", "serde/derive"],
        all_features=False,
        no_default_features=True,
        cargo_args=["--locked", "--bin", "app"],
        timeout_s=900,
        jobs=[
            NewJob(job_id=X86_JOB, target=X86, arch="amd64", queue="crossfarm.builds.amd64"),
            NewJob(job_id=ARM_JOB, target=ARM, arch="arm64", queue="crossfarm.builds.arm64"),
        ],
    )


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path}/db.sqlite"


@pytest.fixture
def store(db_url):
    store = Store(db_url)
    yield store
    store.close()


@pytest.fixture
def built(store):
    return store.add_build(_new_build())


def _manifest():
    return Manifest(
        build_id=BUILD,
        job_id=X86_JOB,
        target=X86,
        attempt=1,
        profile_dir="release",
        artifacts=[
            ArtifactEntry(
                name="app",
                size=3,
                sha256=DIGEST,
                key=f"builds/{BUILD}/{X86}/attempt-1/artifacts/app",
                executable=True,
            )
        ],
    )


def test_a_new_build_is_queued_with_one_queued_job_per_target(built):
    assert built.build_id == BUILD
    assert built.state is BuildState.QUEUED
    assert sorted(
        (job.job_id, job.target, job.arch, job.queue, job.state, job.attempt) for job in built.jobs
    ) == [
        (X86_JOB, X86, "amd64", "crossfarm.builds.amd64", BuildState.QUEUED, 1),
        (ARM_JOB, ARM, "arm64", "crossfarm.builds.arm64", BuildState.QUEUED, 1),
    ]
    assert all(job.worker is None and job.started_at is None for job in built.jobs)


def test_a_build_reads_back_with_its_request_fields(store, built):
    view = store.build(BUILD)
    assert view.source == DIGEST
    assert view.profile == "release"
    assert view.features == ["tls", "serde/derive"]
    assert view.all_features is False
    assert view.no_default_features is True
    assert view.cargo_args == ["--locked", "--bin", "app"]
    assert [job.job_id for job in view.jobs] == [ARM_JOB, X86_JOB]
    assert view.state is BuildState.QUEUED


def test_a_build_outlives_the_store_that_wrote_it(db_url, store, built):
    store.move_job(X86_JOB, 1, BuildState.RUNNING, worker="w1")
    store.close()
    reopened = Store(db_url)
    try:
        view = reopened.build(BUILD)
        assert view.build_id == BUILD
        assert view.state is BuildState.RUNNING
        assert {job.job_id: (job.state, job.worker) for job in view.jobs} == {
            X86_JOB: (BuildState.RUNNING, "w1"),
            ARM_JOB: (BuildState.QUEUED, None),
        }
        assert reopened.build_settings(BUILD)["timeout_s"] == 900
    finally:
        reopened.close()


def test_build_settings_repeat_the_request_fields_a_job_message_needs(store, built):
    assert store.build_settings(BUILD) == {
        "source": DIGEST,
        "profile": "release",
        "features": ["tls", "serde/derive"],
        "all_features": False,
        "no_default_features": True,
        "cargo_args": ["--locked", "--bin", "app"],
        "timeout_s": 900,
    }


def test_a_job_moves_from_queued_to_running_with_its_worker(store, built):
    view = store.move_job(
        X86_JOB,
        1,
        BuildState.RUNNING,
        worker="w1@host",
        mode=BuildMode.NATIVE,
        consumed_from="crossfarm.builds.amd64",
    )
    assert view is not None
    assert view.state is BuildState.RUNNING
    assert view.worker == "w1@host"
    assert view.mode is BuildMode.NATIVE
    assert view.consumed_from == "crossfarm.builds.amd64"
    assert view.started_at is not None
    assert view.finished_at is None
    assert store.build(BUILD).state is BuildState.RUNNING


def test_a_running_job_moves_to_succeeded_with_its_exit_code_and_manifest(store, built):
    store.move_job(X86_JOB, 1, BuildState.RUNNING, worker="w1")
    manifest = _manifest()
    view = store.move_job(
        X86_JOB, 1, BuildState.SUCCEEDED, exit_code=0, manifest=manifest.model_dump(mode="json")
    )
    assert view is not None
    assert view.state is BuildState.SUCCEEDED
    assert view.exit_code == 0
    assert view.worker == "w1"
    assert view.finished_at is not None
    assert view.finished_at >= view.started_at
    record = store.job(X86_JOB)
    assert record.build_id == BUILD
    assert record.manifest == manifest
    assert store.build(BUILD).state is BuildState.RUNNING  # the arm64 job is still queued


def test_a_build_succeeds_when_all_its_jobs_do(store, built):
    for job in (X86_JOB, ARM_JOB):
        store.move_job(job, 1, BuildState.RUNNING)
        store.move_job(job, 1, BuildState.SUCCEEDED, exit_code=0)
    assert store.build(BUILD).state is BuildState.SUCCEEDED


def test_a_failed_job_keeps_its_reason(store, built):
    store.move_job(ARM_JOB, 1, BuildState.RUNNING)
    view = store.move_job(
        ARM_JOB, 1, BuildState.FAILED, exit_code=101, reason="cargo build failed with exit code 101"
    )
    assert view.reason == "cargo build failed with exit code 101"
    assert store.job(ARM_JOB).view.exit_code == 101
    assert store.job(ARM_JOB).manifest is None


def test_a_stale_attempt_returns_none_and_changes_nothing(store, built):
    assert store.move_job(X86_JOB, 2, BuildState.RUNNING, worker="late") is None
    job = store.job(X86_JOB).view
    assert job.state is BuildState.QUEUED
    assert job.worker is None
    assert job.started_at is None
    assert job.attempt == 1


def test_a_stale_attempt_cannot_finish_a_running_job(store, built):
    store.move_job(X86_JOB, 1, BuildState.RUNNING, worker="w1")
    assert store.move_job(X86_JOB, 0, BuildState.FAILED, reason="old") is None
    job = store.job(X86_JOB).view
    assert job.state is BuildState.RUNNING
    assert job.reason is None
    assert job.finished_at is None


def test_an_illegal_move_raises_and_changes_nothing(store, built):
    store.move_job(X86_JOB, 1, BuildState.RUNNING)
    store.move_job(X86_JOB, 1, BuildState.SUCCEEDED, exit_code=0)
    with pytest.raises(IllegalTransition) as exc:
        store.move_job(X86_JOB, 1, BuildState.RUNNING, worker="again")
    assert (exc.value.current, exc.value.new) == ("succeeded", "running")
    job = store.job(X86_JOB).view
    assert job.state is BuildState.SUCCEEDED
    assert job.worker is None


def test_a_queued_job_cannot_skip_to_succeeded(store, built):
    with pytest.raises(IllegalTransition):
        store.move_job(ARM_JOB, 1, BuildState.SUCCEEDED)
    assert store.job(ARM_JOB).view.state is BuildState.QUEUED


def test_a_queued_job_can_be_cancelled(store, built):
    view = store.move_job(ARM_JOB, 1, BuildState.CANCELLED)
    assert view.state is BuildState.CANCELLED
    assert view.started_at is None
    assert view.finished_at is not None


def test_jobs_of_a_build_lists_each_job_once(store, built):
    records = store.jobs_of(BUILD)
    assert sorted(record.view.job_id for record in records) == [X86_JOB, ARM_JOB]
    assert all(record.build_id == BUILD for record in records)


def test_two_builds_keep_their_jobs_apart(store, built):
    other = BuildId("b-fedcba9876543210")
    store.add_build(
        NewBuild(
            build_id=other,
            source=DIGEST,
            profile="dev",
            features=[],
            all_features=False,
            no_default_features=False,
            cargo_args=[],
            timeout_s=60,
            jobs=[
                NewJob(
                    job_id=JobId("j-00000000000000ff"),
                    target=X86,
                    arch="amd64",
                    queue="crossfarm.builds.amd64",
                )
            ],
        )
    )
    assert [r.view.job_id for r in store.jobs_of(other)] == ["j-00000000000000ff"]
    assert len(store.jobs_of(BUILD)) == 2


def test_an_unknown_build_is_not_found(store, built):
    with pytest.raises(NotFound, match="b-ffffffffffffffff"):
        store.build(BuildId("b-ffffffffffffffff"))
    with pytest.raises(NotFound):
        store.build_settings(BuildId("b-ffffffffffffffff"))
    assert store.jobs_of(BuildId("b-ffffffffffffffff")) == []


def test_an_unknown_job_is_not_found(store, built):
    with pytest.raises(NotFound, match="j-ffffffffffffffff"):
        store.job(JobId("j-ffffffffffffffff"))
    with pytest.raises(NotFound):
        store.move_job(JobId("j-ffffffffffffffff"), 1, BuildState.RUNNING)


# The columns are plain DateTime, so SQLite (and PostgreSQL's "timestamp without
# time zone") hand back naive datetimes: add_build answers with "+00:00" times and
# every later read without an offset.
def test_timestamps_read_back_as_the_same_aware_instants(store, built):
    view = store.build(BUILD)
    assert isinstance(view.created_at, datetime)
    assert view.created_at.tzinfo is not None
    assert view.created_at == built.created_at
    assert view.jobs[0].queued_at == built.jobs[0].queued_at
