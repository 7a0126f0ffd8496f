import json
import threading
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from crossfarm.controller.store import Store
from crossfarm.controller.store.builds import BuildSettings, NewBuild, NewJob, OverQueuedQuota
from crossfarm.controller.store.group_commit import Failed
from crossfarm.controller.store.jobs import Outcome
from crossfarm.shared.arch import Arch, BuildMode, Placement
from crossfarm.shared.errors import IllegalTransition, NotFound
from crossfarm.shared.ids import BuildId, JobId, new_build_id, new_job_id
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import (
    ArtifactEntry,
    CargoSpec,
    Manifest,
    SourceStatus,
    WorkerHeartbeat,
    WorkerLimits,
)

BUILD = BuildId("b-0123456789abcdef")
X86_JOB = JobId("j-000000000000000a")
ARM_JOB = JobId("j-000000000000000b")
X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
DIGEST = "0123456789abcdef" * 4
CARGO = CargoSpec(profile="release", features=["tls", "serde/derive"], all_features=False,
                  no_default_features=True, cargo_args=["--locked", "--bin", "app"])
ARM64_CROSS = QueueKey.parse("crossfarm.builds.arm64.cross")
#: PostgreSQL has no key file beside it: the controller is given one
SECRETS_KEY = Fernet.generate_key().decode()


def _new_job(job_id, target, arch, **overrides):
    fields = {
        "queue": QueueKey.parse(f"crossfarm.builds.{arch}"),
        "placement": "native",
        "placed": f"native: an {arch} worker is online",
        "waiting": None,
        "wait_limit_s": None,
        **overrides,
    }
    return NewJob(job_id=job_id, target=target, arch=Arch(arch), **fields)


def _new_build(build_id=BUILD):
    return NewBuild(
        build_id=build_id,
        source=DIGEST,
        cargo=CARGO,
        timeout_s=900,
        jobs=[
            _new_job(X86_JOB, X86, "amd64"),
            _new_job(ARM_JOB, ARM, "arm64"),
        ],
        env={"all": {"RUST_LOG": "debug", "CC": "cc"}, X86: {"CC": "clang", "X86_ONLY": "1"}},
        submitter="ada",
    )


@pytest.fixture
def db_url(database_url):
    """Each test runs on SQLite and on PostgreSQL (tests/conftest.py)."""
    return database_url


def _open(db_url):
    return Store(db_url, SECRETS_KEY if db_url.startswith("postgresql") else None)


@pytest.fixture
def store(db_url):
    store = _open(db_url)
    yield store
    store.close()


@pytest.fixture
def built(store):
    return store.builds.add(_new_build())


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
        (job.job_id, job.target, job.arch, job.queue.name, job.state, job.attempt)
        for job in built.jobs
    ) == [
        (X86_JOB, X86, "amd64", "crossfarm.builds.amd64", BuildState.QUEUED, 1),
        (ARM_JOB, ARM, "arm64", "crossfarm.builds.arm64", BuildState.QUEUED, 1),
    ]
    assert all(job.worker is None and job.started_at is None for job in built.jobs)


def test_a_new_builds_answer_is_the_view_read_back(store, built):
    # made from the inserted rows, not read: it must still be exactly what a read gives
    read = store.builds.get(BUILD)
    assert built == read
    assert built.model_dump_json() == read.model_dump_json()


def test_a_new_builds_answer_with_a_wait_limit_and_a_cross_queue_is_the_view_read_back(store):
    added = store.builds.add(NewBuild(
        build_id=BUILD, source=DIGEST, cargo=CargoSpec(), timeout_s=60, env={}, submitter=None,
        jobs=[_new_job(ARM_JOB, ARM, "arm64", queue=ARM64_CROSS, placement="cross-ok",
                       placed="cross: no arm64 worker online", waiting="waiting: its turn",
                       wait_limit_s=600)]))
    assert added.model_dump_json() == store.builds.get(BUILD).model_dump_json()


def _quota_build(limit, targets=(X86,), tenant="acme"):
    return NewBuild(
        build_id=new_build_id(), source=DIGEST, cargo=CargoSpec(), timeout_s=60, env={},
        submitter=None, tenant=tenant, queued_limit=limit,
        jobs=[_new_job(new_job_id(), target, "amd64") for target in targets])


def test_builds_past_the_queued_quota_are_refused_by_the_transaction_that_would_record_them(
        store):
    two, one, over = (_quota_build(3, (X86, ARM)), _quota_build(3), _quota_build(3))
    other_tenant = _quota_build(3, tenant="globex")
    answers = store.builds.add_many([two, one, over, other_tenant])
    assert [a.build_id for a in answers if not isinstance(a, Failed)] == [
        two.build_id, one.build_id, other_tenant.build_id]
    refused = answers[2].error
    assert isinstance(refused, OverQueuedQuota)
    assert (refused.used, refused.limit, refused.jobs) == (3, 3, 1)
    with pytest.raises(NotFound):
        store.builds.get(over.build_id)
    # an ended job frees its room
    store.jobs.finish(two.jobs[0].job_id, 1, Outcome(BuildState.CANCELLED, reason="test"))
    assert store.builds.add(_quota_build(3)).state is BuildState.QUEUED
    with pytest.raises(OverQueuedQuota):
        store.builds.add(_quota_build(3))


def test_builds_submitted_at_once_never_pass_the_queued_quota(store):
    # each thread's check and record are one step of the one transaction recording them,
    # so whatever the interleaving exactly the quota is recorded
    answers = []
    start = threading.Barrier(8)

    def submit():
        start.wait(30)
        for _ in range(3):
            try:
                answers.append(store.builds.add(_quota_build(5)))
            except OverQueuedQuota as refused:
                answers.append(refused)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 24
    assert sum(not isinstance(a, OverQueuedQuota) for a in answers) == 5
    assert store.usage.unended_jobs("acme") == 5


def test_a_build_reads_back_with_its_request_fields(store, built):
    view = store.builds.get(BUILD)
    assert view.source == DIGEST
    assert view.cargo.profile == "release"
    assert view.cargo.features == ["tls", "serde/derive"]
    assert view.cargo.all_features is False
    assert view.cargo.no_default_features is True
    assert view.cargo.cargo_args == ["--locked", "--bin", "app"]
    assert [job.job_id for job in view.jobs] == [ARM_JOB, X86_JOB]
    assert view.state is BuildState.QUEUED


def test_a_build_outlives_the_store_that_wrote_it(db_url, store, built):
    store.jobs.start(X86_JOB, 1, worker="w1")
    store.close()
    reopened = _open(db_url)
    try:
        view = reopened.builds.get(BUILD)
        assert view.build_id == BUILD
        assert view.state is BuildState.RUNNING
        assert {job.job_id: (job.state, job.worker) for job in view.jobs} == {
            X86_JOB: (BuildState.RUNNING, "w1"),
            ARM_JOB: (BuildState.QUEUED, None),
        }
        assert reopened.builds.settings(BUILD, X86).timeout_s == 900
    finally:
        reopened.close()


def test_build_settings_repeat_the_request_fields_a_job_message_needs(store, built):
    assert store.builds.settings(BUILD, ARM) == BuildSettings(
        source=DIGEST,
        cargo=CargoSpec(profile="release", features=["tls", "serde/derive"], all_features=False,
                        no_default_features=True, cargo_args=["--locked", "--bin", "app"]),
        timeout_s=900,
        env={"RUST_LOG": "debug", "CC": "cc"},
    )


def test_build_settings_merge_the_targets_own_variables_over_the_shared_ones(store, built):
    assert store.builds.settings(BUILD, X86).env == {
        "RUST_LOG": "debug",
        "CC": "clang",
        "X86_ONLY": "1",
    }


def test_a_build_view_names_its_variables_but_never_their_values(store, built):
    view = store.builds.get(BUILD)
    assert view.env_names == ["CC", "RUST_LOG", "X86_ONLY"]
    assert "clang" not in view.model_dump_json()
    assert view.submitter == "ada"


def test_a_job_moves_from_queued_to_running_with_its_worker(store, built):
    view = store.jobs.start(
        X86_JOB,
        1,
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
    assert store.builds.get(BUILD).state is BuildState.RUNNING


def test_a_running_job_moves_to_succeeded_with_its_exit_code_and_manifest(store, built):
    store.jobs.start(X86_JOB, 1, worker="w1")
    manifest = _manifest()
    view = store.jobs.finish(
        X86_JOB, 1, Outcome(BuildState.SUCCEEDED, exit_code=0, manifest=manifest)
    )
    assert view is not None
    assert view.state is BuildState.SUCCEEDED
    assert view.exit_code == 0
    assert view.worker == "w1"
    assert view.finished_at is not None
    assert view.finished_at >= view.started_at
    record = store.jobs.get(X86_JOB)
    assert record.build_id == BUILD
    assert record.manifest == manifest
    assert store.builds.get(BUILD).state is BuildState.RUNNING  # the arm64 job is still queued


def test_a_build_succeeds_when_all_its_jobs_do(store, built):
    for job in (X86_JOB, ARM_JOB):
        store.jobs.start(job, 1)
        store.jobs.finish(job, 1, Outcome(BuildState.SUCCEEDED, exit_code=0))
    assert store.builds.get(BUILD).state is BuildState.SUCCEEDED


def test_a_failed_job_keeps_its_reason(store, built):
    store.jobs.start(ARM_JOB, 1)
    view = store.jobs.finish(
        ARM_JOB,
        1,
        Outcome(BuildState.FAILED, exit_code=101, reason="cargo build failed with exit code 101"),
    )
    assert view.reason == "cargo build failed with exit code 101"
    assert store.jobs.get(ARM_JOB).view.exit_code == 101
    assert store.jobs.get(ARM_JOB).manifest is None


def test_a_reason_longer_than_its_column_is_kept_cut_and_marked(store, built):
    # PostgreSQL refuses a value past a VARCHAR's length (SQLite kept it whole): a worker's
    # long reason must not make its finish report fail.
    store.jobs.start(ARM_JOB, 1)
    view = store.jobs.finish(ARM_JOB, 1, Outcome(BuildState.FAILED, reason="x" * 10_000))
    assert view.state is BuildState.FAILED
    assert view.reason == "x" * 3999 + "…"


def test_a_placement_note_that_grows_with_each_resend_stays_within_its_column(store, built):
    placed = "native: an arm64 worker is online"
    for attempt in range(1, 40):
        store.jobs.claim([store.jobs.get(ARM_JOB)], datetime.now(UTC))
        placed = f"{placed} (re-sent: the broker lost it)"
        assert store.jobs.requeue(ARM_JOB, attempt, QueueKey.parse("crossfarm.builds.arm64"),
                                  placed) is not None
    view = store.jobs.get(ARM_JOB).view
    assert len(view.placed) == 500
    assert view.placed.endswith("…")


def test_a_stale_attempt_returns_none_and_changes_nothing(store, built):
    assert store.jobs.start(X86_JOB, 2, worker="late") is None
    job = store.jobs.get(X86_JOB).view
    assert job.state is BuildState.QUEUED
    assert job.worker is None
    assert job.started_at is None
    assert job.attempt == 1


def test_a_stale_attempt_cannot_finish_a_running_job(store, built):
    store.jobs.start(X86_JOB, 1, worker="w1")
    assert store.jobs.finish(X86_JOB, 0, Outcome(BuildState.FAILED, reason="old")) is None
    job = store.jobs.get(X86_JOB).view
    assert job.state is BuildState.RUNNING
    assert job.reason is None
    assert job.finished_at is None


def test_an_illegal_move_raises_and_changes_nothing(store, built):
    store.jobs.start(X86_JOB, 1)
    store.jobs.finish(X86_JOB, 1, Outcome(BuildState.SUCCEEDED, exit_code=0))
    with pytest.raises(IllegalTransition) as exc:
        store.jobs.start(X86_JOB, 1, worker="again")
    assert (exc.value.current, exc.value.new) == ("succeeded", "running")
    job = store.jobs.get(X86_JOB).view
    assert job.state is BuildState.SUCCEEDED
    assert job.worker is None


def test_a_queued_job_cannot_skip_to_succeeded(store, built):
    with pytest.raises(IllegalTransition):
        store.jobs.finish(ARM_JOB, 1, Outcome(BuildState.SUCCEEDED))
    assert store.jobs.get(ARM_JOB).view.state is BuildState.QUEUED


def test_a_queued_job_can_be_cancelled(store, built):
    view = store.jobs.finish(ARM_JOB, 1, Outcome(BuildState.CANCELLED))
    assert view.state is BuildState.CANCELLED
    assert view.started_at is None
    assert view.finished_at is not None


def test_jobs_of_a_build_lists_each_job_once(store, built):
    records = store.jobs.of_build(BUILD)
    assert sorted(record.view.job_id for record in records) == [X86_JOB, ARM_JOB]
    assert all(record.build_id == BUILD for record in records)


def test_two_builds_keep_their_jobs_apart(store, built):
    other = BuildId("b-fedcba9876543210")
    _one_job_build(store, other, "j-00000000000000ff")
    assert [r.view.job_id for r in store.jobs.of_build(other)] == ["j-00000000000000ff"]
    assert len(store.jobs.of_build(BUILD)) == 2


def test_an_unknown_build_is_not_found(store, built):
    with pytest.raises(NotFound, match="b-ffffffffffffffff"):
        store.builds.get(BuildId("b-ffffffffffffffff"))
    with pytest.raises(NotFound):
        store.builds.settings(BuildId("b-ffffffffffffffff"), X86)
    assert store.jobs.of_build(BuildId("b-ffffffffffffffff")) == []


def test_an_unknown_job_is_not_found(store, built):
    with pytest.raises(NotFound, match="j-ffffffffffffffff"):
        store.jobs.get(JobId("j-ffffffffffffffff"))
    with pytest.raises(NotFound):
        store.jobs.start(JobId("j-ffffffffffffffff"), 1)


# The columns are plain DateTime, so SQLite (and PostgreSQL's "timestamp without
# time zone") hand back naive datetimes: add_build answers with "+00:00" times and
# every later read without an offset.
def test_timestamps_read_back_as_the_same_aware_instants(store, built):
    view = store.builds.get(BUILD)
    assert isinstance(view.created_at, datetime)
    assert view.created_at.tzinfo is not None
    assert view.created_at == built.created_at
    assert view.jobs[0].queued_at == built.jobs[0].queued_at


def _one_job_build(store, build_id, job_id, target=X86, submitter=None):
    arch = "amd64" if target == X86 else "arm64"
    return store.builds.add(
        NewBuild(
            build_id=BuildId(build_id),
            source=DIGEST,
            cargo=CargoSpec(),
            timeout_s=60,
            jobs=[_new_job(JobId(job_id), target, arch)],
            env={},
            submitter=submitter,
        )
    )


def _digest(n):
    return f"{n:064x}"


def test_missing_blobs_answers_across_more_digests_than_one_query_holds(store):
    digests = [_digest(n) for n in range(1234)]
    stored = set(digests[::7])
    for digest in stored:
        store.sources.add_blobs({digest: 10})
    assert any(digests.index(d) > 1000 for d in stored)
    assert store.sources.missing_blobs(digests) == [d for d in digests if d not in stored]


def test_missing_blobs_lists_a_repeated_digest_once(store):
    store.sources.add_blobs({_digest(1): 1})
    assert store.sources.missing_blobs([_digest(2), _digest(1), _digest(2)]) == [_digest(2)]
    assert store.sources.missing_blobs([]) == []


def test_adding_a_blob_twice_keeps_one_record(store):
    store.sources.add_blobs({_digest(5): 3})
    store.sources.add_blobs({_digest(5): 3})
    assert store.sources.missing_blobs([_digest(5)]) == []


def test_a_tree_reads_back_as_it_was_added(store):
    status = SourceStatus(digest=_digest(9), files=3, total_bytes=48, commit="a" * 40)
    store.sources.add_tree(status)
    assert store.sources.tree(_digest(9)) == status


def test_adding_a_tree_twice_keeps_the_first_record(store):
    store.sources.add_tree(SourceStatus(digest=_digest(9), files=3, total_bytes=48))
    store.sources.add_tree(
        SourceStatus(digest=_digest(9), files=3, total_bytes=48, commit="b" * 40))
    assert store.sources.tree(_digest(9)).commit is None


def test_requests_adding_the_same_blobs_and_tree_at_once_all_succeed(store):
    # Parallel CI jobs of one commit send the same files together. SQLite takes one
    # writer at a time; PostgreSQL (and several controllers on it) runs them side by
    # side, where "insert what is not there yet" raced into duplicate keys.
    errors = []

    def add(round_, start):
        start.wait()
        try:
            store.sources.add_blobs({_digest(round_ * 100 + n): n for n in range(30)},
                                    tenant="acme")
            store.sources.add_tree(SourceStatus(digest=_digest(round_ * 100), files=30,
                                                total_bytes=435), "acme")
        except Exception as exc:  # every thread's outcome is asserted below
            errors.append(exc)

    for round_ in range(1, 6):
        start = threading.Barrier(6)
        adding = [threading.Thread(target=add, args=(round_, start)) for _ in range(6)]
        for thread in adding:
            thread.start()
        for thread in adding:
            thread.join()
    assert errors == []
    assert store.sources.missing_blobs([_digest(500 + n) for n in range(30)], "acme") == []
    assert store.sources.source_bytes("acme") == 5 * sum(range(30))
    assert store.sources.tree(_digest(300), "acme").files == 30


def test_sizes_past_two_gib_read_back_whole(store):
    # PostgreSQL's INTEGER stops at 2**31 - 1 (SQLite's integers are 64-bit): a farm whose
    # limits allow a 3 GiB file or tree must be able to record it.
    big = 3 * 1024**3
    store.sources.add_blobs({_digest(7): big}, tenant="acme")
    store.sources.add_tree(SourceStatus(digest=_digest(8), files=1, total_bytes=big), "acme")
    assert store.sources.blob_sizes([_digest(7)]) == {_digest(7): big}
    assert store.sources.source_bytes("acme") == big
    assert store.sources.tree(_digest(8), "acme").total_bytes == big


def test_an_unknown_tree_is_not_found_and_says_how_to_send_it(store):
    with pytest.raises(NotFound, match="POST /v1/sources") as exc:
        store.sources.tree(_digest(7))
    assert _digest(7) in str(exc.value)


def _heartbeat(cpus=4.0):
    return WorkerHeartbeat(
        hostname="host-1",
        arch="amd64",
        queues={"crossfarm.builds.amd64": BuildMode.NATIVE},
        cpus=cpus,
        memory_bytes=8 * 1024**3,
        builder_image="crossfarm/builder:1",
        targets=[X86],
        version="0.1.0",
        concurrency=1,
    )


def test_a_first_heartbeat_registers_the_worker(store):
    store.workers.heartbeat("w1", _heartbeat(), fresh_start=True)
    [worker] = store.workers.all()
    assert worker.name == "w1"
    assert worker.info == _heartbeat()
    assert worker.started_at == worker.last_seen
    assert worker.last_seen.tzinfo is not None


def test_a_first_heartbeat_sent_twice_at_once_registers_the_worker_once(store):
    # A worker whose first heartbeat timed out sends it again while the first is still
    # in flight (perhaps to another controller): neither may fail on the worker's key.
    errors = []

    def beat(name, start):
        start.wait()
        try:
            store.workers.heartbeat(name, _heartbeat(), fresh_start=True)
        except Exception as exc:  # every thread's outcome is asserted below
            errors.append(exc)

    for n in range(5):
        start = threading.Barrier(4)
        beats = [threading.Thread(target=beat, args=(f"w{n}", start)) for _ in range(4)]
        for thread in beats:
            thread.start()
        for thread in beats:
            thread.join()
    assert errors == []
    assert [worker.name for worker in store.workers.all()] == [f"w{n}" for n in range(5)]


def test_a_later_heartbeat_updates_the_worker_but_keeps_its_start(store):
    store.workers.heartbeat("w1", _heartbeat(), fresh_start=True)
    [first] = store.workers.all()
    store.workers.heartbeat("w1", _heartbeat(cpus=8.0), fresh_start=False)
    [worker] = store.workers.all()
    assert worker.info.cpus == 8.0
    assert worker.last_seen > first.last_seen
    assert worker.started_at == first.started_at


def test_a_fresh_start_heartbeat_resets_the_start_time(store):
    store.workers.heartbeat("w1", _heartbeat(), fresh_start=True)
    [first] = store.workers.all()
    store.workers.heartbeat("w1", _heartbeat(), fresh_start=True)
    [worker] = store.workers.all()
    assert worker.started_at > first.started_at
    assert worker.started_at == worker.last_seen


def test_an_older_workers_heartbeat_without_limits_is_accepted_and_reads_back(store):
    older = _heartbeat().model_dump(mode="json", exclude={"limits"})
    assert "limits" not in older
    store.workers.heartbeat("w1", WorkerHeartbeat.model_validate(older), fresh_start=True)
    [worker] = store.workers.all()
    assert worker.info.limits is None


def test_a_workers_limits_read_back_as_it_reported_them(store):
    limits = WorkerLimits(memory_bytes=2**33, pids=4096, cpus=1.5, disk_bytes=None,
                          artifact_count=256, log_line_bytes=65536)
    store.workers.heartbeat("w1", _heartbeat().model_copy(update={"limits": limits}),
                            fresh_start=True)
    [worker] = store.workers.all()
    assert worker.info.limits == limits


def test_workers_are_listed_by_name(store):
    for name in ("w2", "w10", "w1"):
        store.workers.heartbeat(name, _heartbeat(), fresh_start=True)
    assert [w.name for w in store.workers.all()] == ["w1", "w10", "w2"]


def test_running_jobs_are_grouped_by_worker(store, built):
    _one_job_build(store, "b-0000000000000001", "j-0000000000000001")
    _one_job_build(store, "b-0000000000000002", "j-0000000000000002")
    store.jobs.start(X86_JOB, 1, worker="w1")
    store.jobs.start(ARM_JOB, 1, worker="w2")
    store.jobs.start(JobId("j-0000000000000001"), 1, worker="w1")
    store.jobs.start(JobId("j-0000000000000002"), 1, worker="w2")
    store.jobs.finish(ARM_JOB, 1, Outcome(BuildState.SUCCEEDED, exit_code=0))
    running = store.jobs.running_by_worker()
    assert {worker: sorted(jobs) for worker, jobs in running.items()} == {
        "w1": sorted([X86_JOB, "j-0000000000000001"]),
        "w2": ["j-0000000000000002"],
    }


def test_nothing_runs_on_a_fresh_farm(store, built):
    assert store.jobs.running_by_worker() == {}
    store.jobs.finish(X86_JOB, 1, Outcome(BuildState.CANCELLED))
    assert store.jobs.running_by_worker() == {}


def test_waiting_by_arch_counts_each_architectures_queued_jobs_and_its_longest_wait(store, built):
    later = _one_job_build(store, "b-0000000000000001", "j-0000000000000001")
    queued_at = {job.arch: job.queued_at for job in built.jobs}
    waiting = store.jobs.waiting_by_arch()
    assert waiting == {"amd64": (2, queued_at["amd64"]), "arm64": (1, queued_at["arm64"])}
    assert all(when.tzinfo is not None for _, when in waiting.values())

    store.jobs.start(X86_JOB, 1, worker="w1")
    store.jobs.finish(ARM_JOB, 1, Outcome(BuildState.CANCELLED))
    assert store.jobs.waiting_by_arch() == {"amd64": (1, later.jobs[0].queued_at)}


def test_blobs_stored_in_a_pack_are_located_by_it_and_others_are_not(store):
    store.sources.add_blobs({_digest(1): 1, _digest(2): 2}, pack="p" * 64)
    store.sources.add_blobs({_digest(3): 3})
    assert store.sources.blob_packs([_digest(1), _digest(2), _digest(3), _digest(4)]) == {
        _digest(1): "p" * 64, _digest(2): "p" * 64}


def test_a_blob_recorded_alone_keeps_its_place_when_a_pack_repeats_it(store):
    store.sources.add_blobs({_digest(1): 1})
    store.sources.add_blobs({_digest(1): 1}, pack="p" * 64)
    assert store.sources.blob_packs([_digest(1)]) == {}


def test_a_job_reads_back_with_its_placement_and_wait_limit(store):
    store.builds.add(NewBuild(
        build_id=BUILD, source=DIGEST, cargo=CargoSpec(), timeout_s=60, env={}, submitter=None,
        jobs=[_new_job(ARM_JOB, ARM, "arm64", placement="cross-ok",
                       placed="native: waiting, as cross-ok allows nothing else online",
                       waiting="waiting: no arm64 worker online", wait_limit_s=600)],
    ))
    job = store.jobs.get(ARM_JOB).view
    assert job.placement is Placement.CROSS_OK
    assert job.placed == "native: waiting, as cross-ok allows nothing else online"
    assert job.waiting == "waiting: no arm64 worker online"
    assert job.wait_limit_s == 600


def test_requeue_holds_a_sent_job_on_another_queue_under_the_next_attempt(store, built):
    assert len(store.jobs.claim([store.jobs.get(ARM_JOB)], at=built.created_at)) == 1
    moved = store.jobs.requeue(ARM_JOB, 1, ARM64_CROSS, "cross: because")
    assert moved is not None
    assert (moved.queue.name, moved.attempt, moved.state) == (
        "crossfarm.builds.arm64.cross", 2, BuildState.QUEUED)
    assert moved.placed == "cross: because"
    assert moved.waiting is None
    assert moved.queued_at == store.jobs.get(ARM_JOB).view.queued_at
    assert store.jobs.get(ARM_JOB).sent_at is None


def test_the_old_attempt_of_a_requeued_job_can_no_longer_start_it(store, built):
    store.jobs.requeue(ARM_JOB, 1, ARM64_CROSS, "cross: because")
    assert store.jobs.start(ARM_JOB, 1, worker="late") is None
    assert store.jobs.start(ARM_JOB, 2, worker="w1") is not None


def test_requeue_of_a_stale_attempt_changes_nothing(store, built):
    assert store.jobs.requeue(ARM_JOB, 2, ARM64_CROSS, "cross: because") is None
    job = store.jobs.get(ARM_JOB).view
    assert (job.queue.name, job.attempt) == ("crossfarm.builds.arm64", 1)


def test_a_job_that_started_is_not_requeued(store, built):
    store.jobs.start(ARM_JOB, 1, worker="w1")
    assert store.jobs.requeue(ARM_JOB, 1, ARM64_CROSS, "cross: because") is None
    assert store.jobs.get(ARM_JOB).view.queue.name == "crossfarm.builds.arm64"


def test_a_new_job_is_held_until_the_placer_claims_it(store, built):
    assert store.jobs.get(X86_JOB).sent_at is None
    assert store.jobs.in_flight() == []


def test_a_claimed_job_is_in_flight_and_cannot_be_claimed_twice(store, built):
    record = store.jobs.get(X86_JOB)
    [claimed] = store.jobs.claim([record], at=built.created_at)
    assert claimed.sent_at == built.created_at
    assert store.jobs.claim([record], at=built.created_at) == []
    assert [r.view.job_id for r in store.jobs.in_flight()] == [X86_JOB]


def test_an_unclaimed_job_is_held_again_and_says_why(store, built):
    [claimed] = store.jobs.claim([store.jobs.get(X86_JOB)], at=built.created_at)
    assert store.jobs.unclaim(X86_JOB, 1, claimed.sent_at, waiting="queued: broker away")
    record = store.jobs.get(X86_JOB)
    assert (record.sent_at, record.view.waiting) == (None, "queued: broker away")
    assert not store.jobs.unclaim(X86_JOB, 1, claimed.sent_at, waiting="queued: again")


def test_held_jobs_are_counted_per_queue_placement_tenant_and_text(store, built):
    _one_job_build(store, "b-0000000000000001", "j-0000000000000001")
    groups = {(g.queue.name, g.tenant, g.waiting): g.count for g in store.jobs.held_groups()}
    assert groups == {("crossfarm.builds.amd64", "default", None): 2,
                      ("crossfarm.builds.arm64", "default", None): 1}


def test_tell_waiting_writes_only_the_rows_whose_text_differs(store, built):
    amd64, native = QueueKey.parse("crossfarm.builds.amd64"), Placement.NATIVE
    assert [m.job_id for m in store.jobs.tell_waiting(amd64, native, "default", "a")] == [X86_JOB]
    assert store.jobs.tell_waiting(amd64, native, "default", "a") == []
    assert store.jobs.get(X86_JOB).view.waiting == "a"
    assert store.jobs.tell_waiting(amd64, native, "other", "b") == []


def test_tell_waiting_leaves_a_job_that_is_no_longer_held_alone(store, built):
    store.jobs.start(X86_JOB, 1, worker="w1")
    amd64 = QueueKey.parse("crossfarm.builds.amd64")
    assert store.jobs.tell_waiting(amd64, Placement.NATIVE, "default", "a") == []
    assert store.jobs.get(X86_JOB).view.waiting is None


def test_move_held_moves_a_groups_jobs_without_a_new_attempt(store, built):
    arm64, cross = QueueKey.parse("crossfarm.builds.arm64"), ARM64_CROSS
    [moved] = store.jobs.move_held(arm64, Placement.NATIVE, cross, "cross: because")
    assert (moved.job_id, moved.build_id) == (ARM_JOB, BUILD)
    job = store.jobs.get(ARM_JOB).view
    assert (job.queue, job.attempt, job.placed) == (cross, 1, "cross: because")


def test_next_held_takes_each_tenants_oldest_jobs_of_a_queue(store, built):
    _one_job_build(store, "b-0000000000000001", "j-0000000000000001")
    amd64 = QueueKey.parse("crossfarm.builds.amd64")
    assert [r.view.job_id for r in store.jobs.next_held({(amd64, "default"): 1})] == [X86_JOB]
    assert len(store.jobs.next_held({(amd64, "default"): 5})) == 2
    assert store.jobs.next_held({(amd64, "other"): 5}) == []


def test_a_held_jobs_place_in_line_is_counted_when_its_build_is_read(store, built):
    later = _one_job_build(store, "b-0000000000000001", "j-0000000000000001")
    # add() answers as a read would, so a submit's reply needs no second transaction
    assert later.jobs[0].waiting == "queued; position 2 in crossfarm.builds.amd64"
    read = store.builds.get(BuildId("b-0000000000000001")).jobs[0]
    assert read.waiting == "queued; position 2 in crossfarm.builds.amd64"
    store.jobs.claim([store.jobs.get(X86_JOB)], at=built.created_at)
    read = store.builds.get(BuildId("b-0000000000000001")).jobs[0]
    assert read.waiting == "queued; position 1 in crossfarm.builds.amd64"


def test_builds_recorded_together_take_their_places_in_each_line_in_order(store, built):
    news = [NewBuild(build_id=new_build_id(), source=DIGEST, cargo=CargoSpec(), timeout_s=60,
                     jobs=[_new_job(JobId(f"j-00000000000001{n:02x}"), X86, "amd64"),
                           _new_job(JobId(f"j-00000000000002{n:02x}"), ARM, "arm64")],
                     env={}, submitter=None) for n in range(5)]
    answered = store.builds.add_many(news)
    # the built fixture's jobs are first in both lines (a view lists its jobs by target)
    expected = [[f"queued; position {n + 2} in crossfarm.builds.arm64",
                 f"queued; position {n + 2} in crossfarm.builds.amd64"] for n in range(5)]
    assert [[job.waiting for job in view.jobs] for view in answered] == expected
    assert [[job.waiting for job in store.builds.get(new.build_id).jobs]
            for new in news] == expected
    store.jobs.claim([store.jobs.get(JobId("j-0000000000000101"))], at=built.created_at)
    assert [store.builds.get(new.build_id).jobs[1].waiting for new in news[2:]] == [
        f"queued; position {n + 1} in crossfarm.builds.amd64" for n in range(2, 5)]


def test_queued_jobs_lists_only_the_queued_ones_oldest_first(store, built):
    _one_job_build(store, "b-0000000000000001", "j-0000000000000001")
    store.jobs.start(X86_JOB, 1, worker="w1")
    queued = store.jobs.queued()
    assert [record.view.job_id for record in queued] == [ARM_JOB, "j-0000000000000001"]
    assert [record.build_id for record in queued] == [BUILD, "b-0000000000000001"]


SECRET = "hunter2-Xq9v7Lw3"
SHORT = "k1"


def _build_with_secrets(store):
    return store.builds.add(NewBuild(
        build_id=BUILD, source=DIGEST, cargo=CargoSpec(), timeout_s=60, submitter=None,
        jobs=[_new_job(X86_JOB, X86, "amd64"), _new_job(ARM_JOB, ARM, "arm64")],
        env={"all": {"API_TOKEN": SECRET}, ARM: {"PIN": SHORT}},
    ))


def _raw_build_row(store):
    """The row as the database holds it, past the store's types."""
    with store.db.engine.connect() as db:
        names, sealed = db.execute(text("SELECT env_names, env_sealed FROM builds WHERE id = :id"),
                                   {"id": BUILD}).one()
    # A JSON column reads back as text from SQLite and parsed from PostgreSQL.
    return (names if isinstance(names, str) else json.dumps(names)), sealed


def test_no_byte_of_the_sqlite_database_holds_a_variables_value_in_clear(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/db.sqlite")
    _build_with_secrets(store)
    store.close()  # the write-ahead log is folded into the database file
    files = list(tmp_path.glob("db.sqlite*"))
    assert files
    for path in files:
        assert SECRET.encode() not in path.read_bytes()


def test_the_build_row_holds_the_names_in_clear_and_the_values_sealed(store):
    _build_with_secrets(store)
    names, sealed = _raw_build_row(store)
    assert names == '["API_TOKEN", "PIN"]'
    assert sealed
    assert SECRET not in sealed
    assert "API_TOKEN" not in sealed


def test_a_job_gets_its_variables_back_from_the_sealed_values(store):
    _build_with_secrets(store)
    assert store.builds.settings(BUILD, X86).env == {"API_TOKEN": SECRET}
    assert store.builds.settings(BUILD, ARM).env == {"API_TOKEN": SECRET, "PIN": SHORT}


def test_while_a_job_of_the_build_may_still_run_its_values_are_kept(store):
    _build_with_secrets(store)
    store.jobs.start(X86_JOB, 1, worker="w1")
    store.jobs.finish(X86_JOB, 1, Outcome(BuildState.SUCCEEDED, exit_code=0))
    store.jobs.start(ARM_JOB, 1, worker="w2")
    store.jobs.retry(ARM_JOB, 1, QueueKey.parse("crossfarm.builds.arm64"), "its worker was lost")
    assert _raw_build_row(store)[1] is not None
    assert store.builds.settings(BUILD, ARM).env == {"API_TOKEN": SECRET, "PIN": SHORT}


@pytest.mark.parametrize("last", [BuildState.SUCCEEDED, BuildState.FAILED, BuildState.CANCELLED])
def test_once_every_job_has_ended_the_values_are_gone_and_the_names_remain(
        store, last):
    _build_with_secrets(store)
    store.jobs.finish(X86_JOB, 1, Outcome(BuildState.CANCELLED))
    store.jobs.start(ARM_JOB, 1, worker="w1")
    store.jobs.finish(ARM_JOB, 1, Outcome(last, exit_code=0))
    assert _raw_build_row(store) == ('["API_TOKEN", "PIN"]', None)
    assert store.builds.get(BUILD).env_names == ["API_TOKEN", "PIN"]
    assert store.builds.settings(BUILD, ARM).env == {}


def test_a_stale_attempt_ending_does_not_drop_the_values(store):
    _build_with_secrets(store)
    store.jobs.finish(X86_JOB, 1, Outcome(BuildState.CANCELLED))
    assert store.jobs.finish(ARM_JOB, 7, Outcome(BuildState.CANCELLED)) is None
    assert _raw_build_row(store)[1] is not None


def test_ending_one_builds_jobs_leaves_another_builds_values(store):
    _build_with_secrets(store)
    _one_job_build(store, "b-0000000000000001", "j-0000000000000001")
    store.jobs.finish(JobId("j-0000000000000001"), 1, Outcome(BuildState.CANCELLED))
    assert _raw_build_row(store)[1] is not None
