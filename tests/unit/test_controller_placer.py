"""The placer through the use-cases it serves: submit_build records each job on the
queue the fleet's heartbeats suggest, held; tick sends it when a worker has a free slot,
in fair order across tenants, and keeps it where a worker can take it. A real SQLite
store; in-test fakes for the broker, the event stream and the object store."""

import asyncio
import threading
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from farm_fakes import FakeEvents, FakeQueue
from sqlalchemy import event

from crossfarm.controller import jobs, placer
from crossfarm.controller.builds import submit_build
from crossfarm.controller.farm import Doorbell, Farm
from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store import Store
from crossfarm.controller.store.builds import NewBuild, NewJob
from crossfarm.shared.arch import BuildMode, Placement, target_arch
from crossfarm.shared.errors import Conflict
from crossfarm.shared.ids import BuildId, JobId, new_build_id, new_job_id
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import (
    BuildRequest,
    CargoSpec,
    Event,
    JobFinished,
    JobStarted,
    SourceLimits,
    SourceStatus,
    WorkerHeartbeat,
)

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
DIGEST = "0123456789abcdef" * 4
AMD64_QUEUE = "crossfarm.builds.amd64"
ARM64_QUEUE = "crossfarm.builds.arm64"
ARM64_CROSS = "crossfarm.builds.arm64.cross"
ARM64_EMULATED = "crossfarm.builds.arm64.emulated"
N, C, E = BuildMode.NATIVE, BuildMode.CROSS, BuildMode.EMULATED
SECRETS_KEY = Fernet.generate_key().decode()


class FakeStorage:
    def exists(self, key):
        return True


def _settings(database_url, **fields):
    # Long bounds unless a test shortens one, so a `now` in the future moves nothing by itself.
    defaults = {"default_placement": Placement.NATIVE, "pickup_bound_s": 3600,
                "lost_after_s": 3600}
    if database_url.startswith("postgresql"):
        defaults["secrets_key"] = SECRETS_KEY
    return ControllerSettings(database_url=database_url, **{**defaults, **fields})


@pytest.fixture
def make_farm(request, database_url, tmp_path):
    """Farms on SQLite and on PostgreSQL (tests/conftest.py); each `db` a database of its own."""
    stores = []

    def url(db):
        if db == "crossfarm":
            return database_url
        if database_url.startswith("sqlite"):
            return f"sqlite:///{tmp_path}/{db}.db"
        return request.getfixturevalue("postgres").schema()

    def make(db="crossfarm", **fields):
        settings = _settings(url(db), **fields)
        store = Store(settings.database_url, settings.secrets_key.get_secret_value()
                      if settings.secrets_key else None)
        stores.append(store)
        store.sources.add_tree(SourceStatus(digest=DIGEST, files=1, total_bytes=10))
        queue = FakeQueue()
        return Farm(settings=settings, store=store, queue=queue, events=FakeEvents(queue),
                    storage=FakeStorage())

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def farm(make_farm):
    return make_farm()


def _worker(farm, name, arch, queues, concurrency=1, at=None):
    info = WorkerHeartbeat(
        hostname=name, arch=arch, queues=queues, cpus=4, memory_bytes=8 * 1024**3,
        builder_image="crossfarm/builder:1", targets=[X86, ARM], version="0.1.0",
        concurrency=concurrency,
    )
    farm.store.workers.heartbeat(name, info, fresh_start=True, at=at)


def _amd64_with_arm64_cross(farm, name="amd64-1", at=None):
    _worker(farm, name, "amd64", {AMD64_QUEUE: N, ARM64_CROSS: C}, at=at)


def _arm64(farm, name="arm64-1"):
    _worker(farm, name, "arm64", {ARM64_QUEUE: N})


def _submit(farm, targets=(ARM,), tenant="default", **fields):
    return submit_build(farm, BuildRequest(source=DIGEST, targets=list(targets), **fields),
                        tenant=tenant, any_source=True)


def _job(farm, build, target=ARM):
    [job] = [j for j in farm.store.builds.get(BuildId(build.build_id)).jobs if j.target == target]
    return job


def test_a_cross_ok_arm64_job_with_only_an_amd64_cross_worker_goes_to_the_cross_queue(farm):
    _amd64_with_arm64_cross(farm)

    build = _submit(farm, placement=Placement.CROSS_OK)

    job = _job(farm, build)
    assert (job.queue.name, job.placement, job.attempt) == (ARM64_CROSS, Placement.CROSS_OK, 1)
    assert job.placed == "cross: no arm64 worker online; cross-ok allows a cross toolchain"
    assert job.waiting == "queued; position 1 in crossfarm.builds.arm64.cross"
    assert farm.queue.sent == []  # held until the placer's tick, which the submit rang for

    placer.tick(farm)

    assert _job(farm, build).waiting is None
    [(message, queue)] = farm.queue.sent
    assert (message.job_id, message.attempt, queue) == (job.job_id, 1, ARM64_CROSS)


def test_each_target_of_a_build_is_placed_on_its_own(farm):
    _amd64_with_arm64_cross(farm)

    build = _submit(farm, targets=(X86, ARM), placement=Placement.CROSS_OK)

    assert {j.target: j.queue.name for j in build.jobs} == {X86: AMD64_QUEUE, ARM: ARM64_CROSS}
    placer.tick(farm)
    assert sorted(queue for _, queue in farm.queue.sent) == [AMD64_QUEUE, ARM64_CROSS]


def test_an_arm64_worker_wins_over_a_cross_toolchain(farm):
    _amd64_with_arm64_cross(farm)
    _arm64(farm)

    job = _job(farm, _submit(farm, placement=Placement.EMULATE_OK))

    assert job.queue.name == ARM64_QUEUE
    assert job.placed == "native: an arm64 worker is online"


def test_an_emulate_ok_job_goes_to_an_emulating_worker_when_nothing_better_is_online(farm):
    _worker(farm, "amd64-qemu", "amd64", {AMD64_QUEUE: N, ARM64_EMULATED: E})

    assert _job(farm, _submit(farm, placement=Placement.CROSS_OK)).queue.name == ARM64_QUEUE
    assert _job(farm, _submit(farm, placement=Placement.EMULATE_OK)).queue.name == ARM64_EMULATED


def test_a_request_without_a_placement_takes_the_farms_default(make_farm):
    farm = make_farm(default_placement=Placement.CROSS_OK)
    _amd64_with_arm64_cross(farm)

    job = _job(farm, _submit(farm))

    assert (job.placement, job.queue.name) == (Placement.CROSS_OK, ARM64_CROSS)


def test_a_request_carries_its_wait_limit_to_each_job(farm):
    assert _job(farm, _submit(farm, wait_limit_s=90)).wait_limit_s == 90


def test_a_native_arm64_job_with_no_arm64_worker_waits_on_the_native_queue_and_says_why(farm):
    _amd64_with_arm64_cross(farm)

    build = _submit(farm, placement=Placement.NATIVE)

    job = _job(farm, build)
    assert job.queue.name == ARM64_QUEUE
    assert job.placed.startswith("native: waiting")
    assert job.waiting.startswith("waiting: no arm64 worker online")

    placer.tick(farm)
    assert farm.queue.sent == []  # held: no worker could take it

    job = _job(farm, build)
    assert job.queue.name == ARM64_QUEUE
    assert job.waiting.startswith("waiting: no arm64 worker online")
    assert "--placement cross-ok" in job.waiting
    assert job.waiting.endswith("; position 1 in crossfarm.builds.arm64")


def test_a_waiting_native_job_stays_on_its_queue_once_an_arm64_worker_appears(farm):
    build = _submit(farm, placement=Placement.NATIVE)
    placer.tick(farm)

    _arm64(farm)
    placer.tick(farm)

    job = _job(farm, build)
    assert (job.queue.name, job.attempt) == (ARM64_QUEUE, 1)
    assert job.waiting is None
    assert [(m.attempt, q) for m, q in farm.queue.sent] == [(1, ARM64_QUEUE)]


def test_jobs_waiting_on_one_queue_are_numbered_oldest_first_when_read(farm):
    first = _submit(farm)
    second = _submit(farm)
    other = _submit(farm, targets=(X86,))

    placer.tick(farm)

    assert _job(farm, first).waiting.endswith("; position 1 in crossfarm.builds.arm64")
    assert _job(farm, second).waiting.endswith("; position 2 in crossfarm.builds.arm64")
    assert _job(farm, other, X86).waiting.endswith("; position 1 in crossfarm.builds.amd64")
    # The row keeps what the job waits for, not its place: a moving queue rewrites nothing.
    assert farm.store.jobs.get(JobId(_job(farm, second).job_id)).view.waiting == (
        "waiting: no arm64 worker online (placement native: use --placement cross-ok to "
        "allow a cross toolchain)")

    _arm64(farm)
    placer.tick(farm)
    assert _job(farm, first).waiting is None  # sent
    assert _job(farm, second).waiting == "queued: waiting for a free worker; position 1 in " \
                                         "crossfarm.builds.arm64"


def test_a_cross_ok_job_whose_arm64_worker_is_lost_is_requeued_on_the_cross_queue(make_farm):
    farm = make_farm(lost_after_s=30)
    _arm64(farm)
    _amd64_with_arm64_cross(farm)
    build = _submit(farm, placement=Placement.CROSS_OK)
    queued_at = _job(farm, build).queued_at
    assert _job(farm, build).queue.name == ARM64_QUEUE
    placer.tick(farm, now=queued_at)

    # The arm64 worker falls silent while the amd64 one keeps beating.
    _amd64_with_arm64_cross(farm, at=queued_at + timedelta(seconds=31))
    placer.tick(farm, now=queued_at + timedelta(seconds=32))

    job = _job(farm, build)
    assert (job.queue.name, job.attempt, job.state) == (ARM64_CROSS, 2, BuildState.QUEUED)
    assert job.placed.startswith("cross: no arm64 worker online")
    assert [(m.job_id, m.attempt, q) for m, q in farm.queue.sent] == [
        (job.job_id, 1, ARM64_QUEUE),
        (job.job_id, 2, ARM64_CROSS),
    ]


# tick(farm, now) measures waits from `now` but asks fleet.capacity, which reads the
# wall clock, who is online: one pass runs on two clocks.
def test_tick_judges_workers_lost_at_the_time_it_is_given(make_farm):
    farm = make_farm(lost_after_s=30)
    _arm64(farm)
    build = _submit(farm, placement=Placement.NATIVE)
    queued_at = _job(farm, build).queued_at

    placer.tick(farm, now=queued_at + timedelta(hours=1))

    assert _job(farm, build).waiting.startswith("waiting: no arm64 worker online")


def test_a_native_job_no_arm64_worker_took_within_the_pickup_bound_moves_to_cross(make_farm):
    farm = make_farm(pickup_bound_s=60)
    _arm64(farm)
    _amd64_with_arm64_cross(farm)
    build = _submit(farm, placement=Placement.CROSS_OK)
    job = _job(farm, build)

    placer.tick(farm, now=job.queued_at + timedelta(seconds=59))
    assert (_job(farm, build).queue.name, _job(farm, build).attempt) == (ARM64_QUEUE, 1)

    placer.tick(farm, now=job.queued_at + timedelta(seconds=61))
    moved = _job(farm, build)
    assert (moved.queue.name, moved.attempt) == (ARM64_CROSS, 2)
    assert moved.placed == "cross: no arm64 worker took it within 60 s; cross-ok allows cross"
    assert [q for _, q in farm.queue.sent] == [ARM64_QUEUE, ARM64_CROSS]


def test_a_native_placement_never_leaves_the_native_queue_however_long_it_waits(make_farm):
    farm = make_farm(pickup_bound_s=60)
    _arm64(farm)
    _amd64_with_arm64_cross(farm)
    build = _submit(farm, placement=Placement.NATIVE)

    placer.tick(farm, now=_job(farm, build).queued_at + timedelta(seconds=600))

    assert (_job(farm, build).queue.name, _job(farm, build).attempt) == (ARM64_QUEUE, 1)
    assert len(farm.queue.sent) == 1


def test_the_message_left_on_the_old_queue_cannot_start_a_moved_job(make_farm):
    farm = make_farm(pickup_bound_s=60)
    _arm64(farm)
    _amd64_with_arm64_cross(farm)
    build = _submit(farm, placement=Placement.CROSS_OK)
    job = _job(farm, build)
    placer.tick(farm, now=job.queued_at + timedelta(seconds=1))
    placer.tick(farm, now=job.queued_at + timedelta(seconds=61))

    def start(attempt, worker, mode, queue):
        return jobs.start(farm, JobId(job.job_id), JobStarted(
            attempt=attempt, worker=worker, hostname=worker, mode=mode, consumed_from=queue))

    assert not start(1, "arm64-1", N, ARM64_QUEUE).proceed
    assert start(2, "amd64-1", C, ARM64_CROSS).proceed
    assert _job(farm, build).state is BuildState.RUNNING


def test_a_job_past_its_wait_limit_is_failed_with_a_reason_naming_the_limit(farm):
    build = _submit(farm, placement=Placement.NATIVE, wait_limit_s=60)
    queued_at = _job(farm, build).queued_at

    placer.tick(farm, now=queued_at + timedelta(seconds=59))
    assert _job(farm, build).state is BuildState.QUEUED

    placer.tick(farm, now=queued_at + timedelta(seconds=61))
    job = _job(farm, build)
    assert job.state is BuildState.FAILED
    assert "wait limit of 60 s" in job.reason
    assert "no arm64 worker online" in job.reason
    kinds = [(event.kind, event.state) for _, event in farm.events.appended]
    assert kinds[-2:] == [("state", BuildState.FAILED), ("end", BuildState.FAILED)]


def test_a_job_without_a_wait_limit_waits_for_ever(farm):
    build = _submit(farm, placement=Placement.NATIVE)

    placer.tick(farm, now=_job(farm, build).queued_at + timedelta(days=30))

    assert _job(farm, build).state is BuildState.QUEUED


def test_a_jobs_waiting_text_is_recorded_and_told_only_to_a_stream_that_exists(farm):
    build = _submit(farm, placement=Placement.NATIVE)
    assert _job(farm, build).waiting.startswith("waiting: no arm64 worker online")
    assert farm.events.logs() == []  # a held build nobody follows costs no stream

    second = _submit(farm, placement=Placement.NATIVE)
    farm.events.append(second.build_id, Event(kind="log", target=ARM, line="followed"))
    _arm64(farm)
    placer.tick(farm)  # the first takes the worker's one slot; the second waits for it
    placer.tick(farm)
    assert _job(farm, build).waiting is None
    assert _job(farm, second).waiting.startswith("queued: waiting for a free worker; position")
    assert farm.events.logs()[1:] == ["crossfarm: queued: waiting for a free worker"]
    assert farm.events.appended[-1][0] == second.build_id


def test_tick_leaves_jobs_that_started_alone(farm):
    _arm64(farm)
    build = _submit(farm, placement=Placement.NATIVE, wait_limit_s=1)
    job = _job(farm, build)
    jobs.start(farm, JobId(job.job_id), JobStarted(
        attempt=1, worker="arm64-1", hostname="arm64-1", mode=N, consumed_from=ARM64_QUEUE))

    placer.tick(farm, now=job.queued_at + timedelta(seconds=2))

    assert _job(farm, build).state is BuildState.RUNNING
    assert _job(farm, build).waiting is None


def _start(farm, build, worker="arm64-1", queue=ARM64_QUEUE, mode=N):
    _lease_of_start(farm, build, worker, queue, mode)
    return _job(farm, build)


def _lease_of_start(farm, build, worker="arm64-1", queue=ARM64_QUEUE, mode=N):
    """Send and start the build's job as `worker`; the lease secret it is given."""
    placer.tick(farm)  # sent, as a worker takes only what the placer sent
    job = _job(farm, build)
    verdict = jobs.start(farm, JobId(job.job_id), JobStarted(
        attempt=job.attempt, worker=worker, hostname=worker, mode=mode, consumed_from=queue))
    assert verdict.proceed
    return verdict.lease


def _beat(farm, name, queues, running=(), arch="arm64", interval_s=10.0):
    info = WorkerHeartbeat(
        hostname=name, arch=arch, queues=queues, cpus=4, memory_bytes=8 * 1024**3,
        builder_image="crossfarm/builder:1", targets=[X86, ARM], version="0.1.0",
        concurrency=1, running=list(running), interval_s=interval_s)
    farm.store.workers.heartbeat(name, info, fresh_start=False)


def test_a_running_job_whose_worker_is_lost_is_rerun_as_the_next_attempt(make_farm):
    farm = make_farm(lost_after_s=30)
    _arm64(farm)
    build = _submit(farm, placement=Placement.NATIVE)
    running = _start(farm, build)

    placer.tick(farm, now=running.started_at + timedelta(seconds=31))

    job = _job(farm, build)
    assert (job.state, job.attempt, job.worker, job.queue.name) == (
        BuildState.QUEUED, 2, None, ARM64_QUEUE)
    assert "worker arm64-1 was lost" in job.placed
    assert any("re-running as attempt 2" in (e.line or "") for _, e in farm.events.appended)
    assert [(m.attempt, q) for m, q in farm.queue.sent] == [(1, ARM64_QUEUE)]  # held: none online

    _arm64(farm)
    placer.tick(farm)
    assert [(m.attempt, q) for m, q in farm.queue.sent] == [(1, ARM64_QUEUE), (2, ARM64_QUEUE)]
    assert farm.events.attempts[JobId(job.job_id)] == 2


def test_a_rerun_jobs_message_carries_the_builds_variables_until_the_build_ends(make_farm):
    farm = make_farm(lost_after_s=30)
    _arm64(farm)
    build = _submit(farm, placement=Placement.NATIVE, env={"TOKEN": "s3cret-abc"},
                    target_env={ARM: {"PIN": "k1"}})
    running = _start(farm, build)

    placer.tick(farm, now=running.started_at + timedelta(seconds=31))
    _arm64(farm)
    lease = _lease_of_start(farm, build)

    [first, rerun] = [message for message, _ in farm.queue.sent]
    assert rerun.attempt == 2
    assert rerun.env == first.env == {"TOKEN": "s3cret-abc", "PIN": "k1"}
    jobs.report_finished(farm, JobId(running.job_id),
                         JobFinished(attempt=2, worker="arm64-1", lease=lease,
                                     state=BuildState.SUCCEEDED, exit_code=0))
    assert farm.store.builds.settings(BuildId(build.build_id), ARM).env == {}
    assert farm.store.builds.get(BuildId(build.build_id)).env_names == ["PIN", "TOKEN"]


def test_a_running_job_its_live_worker_no_longer_lists_is_rerun_after_the_grace(make_farm):
    farm = make_farm(lease_grace_s=15)
    _arm64(farm)
    build = _submit(farm, placement=Placement.NATIVE)
    running = _start(farm, build)
    _beat(farm, "arm64-1", {ARM64_QUEUE: N}, running=[])

    placer.tick(farm, now=running.started_at + timedelta(seconds=10))
    assert _job(farm, build).state is BuildState.RUNNING

    placer.tick(farm, now=running.started_at + timedelta(seconds=16))
    job = _job(farm, build)
    assert (job.state, job.attempt) == (BuildState.QUEUED, 2)
    assert "no longer runs it" in job.placed


def test_a_running_job_its_worker_lists_keeps_its_lease(make_farm):
    farm = make_farm(lease_grace_s=15)
    _arm64(farm)
    build = _submit(farm, placement=Placement.NATIVE)
    running = _start(farm, build)
    _beat(farm, "arm64-1", {ARM64_QUEUE: N}, running=[f"{running.job_id}-1"])

    placer.tick(farm, now=running.started_at + timedelta(seconds=25))

    assert (_job(farm, build).state, _job(farm, build).attempt) == (BuildState.RUNNING, 1)


def test_a_job_whose_workers_keep_dying_fails_after_max_attempts(make_farm):
    farm = make_farm(lost_after_s=30, max_attempts=2)
    _arm64(farm)
    build = _submit(farm, placement=Placement.NATIVE)
    first = _start(farm, build)
    placer.tick(farm, now=first.started_at + timedelta(seconds=31))
    _arm64(farm)  # the worker comes back and takes attempt 2, then dies too
    second = _start(farm, build)
    assert second.attempt == 2
    placer.tick(farm, now=second.started_at + timedelta(seconds=31))

    job = _job(farm, build)
    assert job.state is BuildState.FAILED
    assert job.reason == "worker arm64-1 was lost; gave up after 2 attempts"


def test_a_stale_attempt_can_neither_start_nor_finish_after_a_rerun(make_farm):
    farm = make_farm(lost_after_s=30)
    _arm64(farm)
    build = _submit(farm, placement=Placement.NATIVE)
    running = _start(farm, build)
    placer.tick(farm, now=running.started_at + timedelta(seconds=31))
    job_id = JobId(running.job_id)

    stale_start = jobs.start(farm, job_id, JobStarted(
        attempt=1, worker="arm64-1", hostname="h", mode=N, consumed_from=ARM64_QUEUE))
    assert not stale_start.proceed
    with pytest.raises(Conflict):
        jobs.report_finished(farm, job_id, JobFinished(attempt=1, worker="arm64-1",
                                                       lease="the first attempt's",
                                                       state=BuildState.SUCCEEDED))
    assert _job(farm, build).state is BuildState.QUEUED


def test_a_queued_job_whose_message_the_broker_lost_is_resent(make_farm):
    farm = make_farm(reconcile_after_s=30)
    _arm64(farm)
    build = _submit(farm, placement=Placement.NATIVE)
    job = _job(farm, build)
    placer.tick(farm, now=job.queued_at)
    farm.queue.sent.clear()  # Redis restarted without its data

    placer.tick(farm, now=job.queued_at + timedelta(seconds=10))
    assert _job(farm, build).attempt == 1  # too early to tell a loss from a slow pickup

    placer.tick(farm, now=job.queued_at + timedelta(seconds=31))
    resent = _job(farm, build)
    assert (resent.attempt, resent.queue.name) == (2, ARM64_QUEUE)
    assert resent.placed.endswith("(re-sent: the broker lost it)")
    assert [q for _, q in farm.queue.sent] == [ARM64_QUEUE]


def test_a_job_the_broker_refused_stays_queued_and_is_sent_once_it_is_back(make_farm):
    farm = make_farm(reconcile_after_s=30)
    _arm64(farm)
    def refuse(message, queue):
        raise ConnectionError("Error 111 connecting to redis:6379")

    sent, farm.queue.enqueue = farm.queue.enqueue, refuse
    build = _submit(farm, placement=Placement.NATIVE)
    job = _job(farm, build)
    placer.tick(farm, now=job.queued_at)
    job = _job(farm, build)
    assert (job.state, job.attempt) == (BuildState.QUEUED, 1)  # accepted, not failed
    assert job.waiting.startswith(jobs.BROKER_AWAY)
    assert "the broker is unreachable (Error 111 connecting to redis:6379); the job " \
           "stays queued" in farm.events.logs()[-1]
    placer.tick(farm, now=job.queued_at + timedelta(seconds=2))
    assert len(farm.events.logs()) == 1  # said once, not every tick

    farm.queue.enqueue = sent  # Redis is back
    placer.tick(farm, now=job.queued_at + timedelta(seconds=4))
    resent = _job(farm, build)
    # No message of attempt 1 ever reached the broker, so it needs no new attempt.
    assert (resent.state, resent.attempt, resent.queue.name) == (BuildState.QUEUED, 1, ARM64_QUEUE)
    assert [q for _, q in farm.queue.sent] == [ARM64_QUEUE]


def test_each_job_message_carries_the_limits_its_tree_was_accepted_under(make_farm):
    farm = make_farm(max_source_files=7, max_file_bytes=4096, max_source_bytes=8192)
    _arm64(farm)
    _submit(farm, placement=Placement.NATIVE)
    placer.tick(farm)
    [(message, _)] = farm.queue.sent
    assert message.limits == SourceLimits(max_files=7, max_file_bytes=4096,
                                          max_total_bytes=8192)


def test_a_queued_job_whose_message_is_still_there_is_not_resent(make_farm):
    farm = make_farm(reconcile_after_s=30)
    _arm64(farm)
    build = _submit(farm, placement=Placement.NATIVE)
    placer.tick(farm, now=_job(farm, build).queued_at)

    placer.tick(farm, now=_job(farm, build).queued_at + timedelta(seconds=300))

    assert _job(farm, build).attempt == 1


def test_a_silent_workers_stale_list_is_not_held_against_its_jobs(make_farm):
    farm = make_farm(lease_grace_s=5, lost_after_s=30)
    _arm64(farm)
    build = _submit(farm, placement=Placement.NATIVE)
    running = _start(farm, build)
    _beat(farm, "arm64-1", {ARM64_QUEUE: N}, running=[], interval_s=1.0)

    # 10 s without a heartbeat from a worker that beats every second: it may be dead,
    # but it is not lost yet, so its last list (sent before the job started) says nothing.
    placer.tick(farm, now=running.started_at + timedelta(seconds=10))
    assert (_job(farm, build).state, _job(farm, build).attempt) == (BuildState.RUNNING, 1)

    placer.tick(farm, now=running.started_at + timedelta(seconds=31))
    job = _job(farm, build)
    assert (job.state, job.attempt) == (BuildState.QUEUED, 2)
    assert "worker arm64-1 was lost" in job.placed


def _statements(farm, chore):
    """How many SQL statements `chore` sends to the farm's database."""
    count = 0

    def counted(*_args):
        nonlocal count
        count += 1

    event.listen(farm.store.db.engine, "before_cursor_execute", counted)
    try:
        chore()
    finally:
        event.remove(farm.store.db.engine, "before_cursor_execute", counted)
    return count


def _flood(farm, count, tenant="default", target=ARM):
    """`count` held jobs of one tenant, recorded in one build as submits would."""
    arch = target_arch(target)
    farm.store.builds.add(NewBuild(
        build_id=new_build_id(), source=DIGEST, cargo=CargoSpec(), timeout_s=60, env={},
        submitter=None, tenant=tenant,
        jobs=[NewJob(job_id=new_job_id(), target=target, arch=arch, queue=QueueKey(arch),
                     placement="native", placed="native: an arm64 worker is online",
                     waiting=None, wait_limit_s=None) for _ in range(count)]))


def _idle_tick_statements(make_farm, held):
    farm = make_farm(db=f"idle-{held}")
    _worker(farm, "arm64-1", "arm64", {ARM64_QUEUE: N}, concurrency=2)
    _flood(farm, held)
    placer.tick(farm)  # fills the two slots and tells the rest what they wait for
    assert len(farm.queue.sent) == 2
    count = _statements(farm, lambda: placer.tick(farm))
    assert len(farm.queue.sent) == 2
    return count


def test_an_idle_tick_issues_as_few_statements_with_3000_held_jobs_as_with_30(make_farm):
    few = _idle_tick_statements(make_farm, 30)
    many = _idle_tick_statements(make_farm, 3000)
    assert many == few
    assert many <= 10


def _dispatch_tick_statements(make_farm, held, slots):
    farm = make_farm(db=f"dispatch-{held}")
    _flood(farm, held, tenant="a")
    _flood(farm, held, tenant="b")
    placer.tick(farm)  # no worker: everything is held and told so
    _worker(farm, "arm64-1", "arm64", {ARM64_QUEUE: N}, concurrency=slots)
    count = _statements(farm, lambda: placer.tick(farm))
    assert len(farm.queue.sent) == slots
    return count


def test_a_tick_sending_k_jobs_issues_as_many_statements_at_3000_held_as_at_30(make_farm):
    few = _dispatch_tick_statements(make_farm, 15, slots=10)
    many = _dispatch_tick_statements(make_farm, 1500, slots=10)
    assert many == few
    assert many <= 20  # workers, jobs sent or running, overdue, groups, turns, heads, claim,
    #                    the builds to send, one text per group


def _run_one(farm, worker="arm64-1"):
    """The placer sends a job; the worker runs it to the end. Returns its tenant."""
    before = len(farm.queue.sent)
    placer.tick(farm)
    [(message, _)] = farm.queue.sent[before:]
    record = farm.store.jobs.get(message.job_id)
    verdict = jobs.start(farm, message.job_id, JobStarted(
        attempt=message.attempt, worker=worker, hostname=worker, mode=N,
        consumed_from=ARM64_QUEUE))
    assert verdict.proceed
    assert verdict.lease
    jobs.report_finished(farm, message.job_id, JobFinished(
        attempt=message.attempt, worker=worker, lease=verdict.lease,
        state=BuildState.SUCCEEDED, exit_code=0))
    return record.tenant


def test_a_tenant_flooding_a_queue_does_not_starve_another(farm):
    _arm64(farm)  # one worker, one slot
    for _ in range(20):
        _submit(farm, tenant="acme")
    for _ in range(2):
        _submit(farm, tenant="bolt")

    order = [_run_one(farm) for _ in range(6)]

    assert order == ["acme", "bolt", "acme", "bolt", "acme", "acme"]


def test_the_tenant_with_fewer_jobs_running_on_the_arch_is_served_first(make_farm):
    farm = make_farm()
    _worker(farm, "arm64-1", "arm64", {ARM64_QUEUE: N}, concurrency=4)
    for _ in range(6):
        _submit(farm, tenant="acme")
    _submit(farm, tenant="bolt")

    placer.tick(farm)

    tenants = [farm.store.jobs.get(m.job_id).tenant for m, _ in farm.queue.sent]
    assert sorted(tenants) == ["acme", "acme", "acme", "bolt"]


def test_a_tenant_at_its_running_per_arch_limit_waits_and_is_told_why(make_farm):
    farm = make_farm(tenant_quotas={"acme": {"running_per_arch": 2}})
    _worker(farm, "arm64-1", "arm64", {ARM64_QUEUE: N}, concurrency=4)
    builds = [_submit(farm, tenant="acme") for _ in range(3)]
    farm.events.append(builds[2].build_id, Event(kind="log", target=ARM, line="followed"))

    placer.tick(farm)

    assert len(farm.queue.sent) == 2  # two slots stay free: acme may hold no more
    assert _job(farm, builds[2]).waiting == (
        "waiting: tenant acme at its 2-job arm64 limit; position 1 in crossfarm.builds.arm64")
    assert farm.events.logs()[-1] == "crossfarm: waiting: tenant acme at its 2-job arm64 limit"
    other = _submit(farm, tenant="bolt")
    placer.tick(farm)
    assert _job(farm, other).waiting is None  # another tenant takes a free slot

    _run_one_sent(farm, farm.queue.sent[0][0])
    placer.tick(farm)
    assert _job(farm, builds[2]).waiting is None  # sent once acme had room again


def _run_one_sent(farm, message):
    verdict = jobs.start(farm, message.job_id, JobStarted(
        attempt=message.attempt, worker="arm64-1", hostname="arm64-1", mode=N,
        consumed_from=ARM64_QUEUE))
    jobs.report_finished(farm, message.job_id, JobFinished(
        attempt=message.attempt, worker="arm64-1", lease=verdict.lease,
        state=BuildState.SUCCEEDED, exit_code=0))


def test_a_draining_worker_gets_no_new_job(farm):
    _arm64(farm)
    farm.store.workers.set_drain("arm64-1", True)
    build = _submit(farm)

    placer.tick(farm)

    assert farm.queue.sent == []
    assert _job(farm, build).waiting.startswith("waiting: no arm64 worker online")


def test_a_submit_rings_the_placer(farm):
    rung = []
    object.__setattr__(farm, "doorbell", type("Bell", (), {"ring": lambda self: rung.append(1)})())
    _submit(farm)
    assert rung == [1]


def test_a_held_job_behind_a_busy_native_worker_moves_to_cross_past_the_pickup_bound(make_farm):
    farm = make_farm(pickup_bound_s=60)
    _arm64(farm)
    _amd64_with_arm64_cross(farm)
    first = _submit(farm, placement=Placement.CROSS_OK)
    second = _submit(farm, placement=Placement.CROSS_OK)
    queued_at = _job(farm, second).queued_at
    placer.tick(farm, now=queued_at)
    _start(farm, first)  # the arm64 worker's one slot is taken

    placer.tick(farm, now=queued_at + timedelta(seconds=59))
    assert _job(farm, second).waiting.startswith("queued: waiting for a free worker")

    placer.tick(farm, now=queued_at + timedelta(seconds=61))
    moved = _job(farm, second)
    # Never sent before, so no attempt to fence off: it moves and is sent as attempt 1.
    assert (moved.queue.name, moved.attempt, moved.waiting) == (ARM64_CROSS, 1, None)
    assert moved.placed == "cross: no arm64 worker took it within 60 s; cross-ok allows cross"
    assert [q for _, q in farm.queue.sent] == [ARM64_QUEUE, ARM64_CROSS]
    assert "crossfarm: cross: no arm64 worker took it within 60 s; cross-ok allows cross" in (
        farm.events.logs())


def test_a_held_job_moves_at_once_when_only_an_allowed_fallback_is_online(farm):
    build = _submit(farm, placement=Placement.CROSS_OK)
    placer.tick(farm)
    assert _job(farm, build).queue.name == ARM64_QUEUE

    _amd64_with_arm64_cross(farm)
    placer.tick(farm)

    job = _job(farm, build)
    assert (job.queue.name, job.attempt, job.waiting) == (ARM64_CROSS, 1, None)
    assert [q for _, q in farm.queue.sent] == [ARM64_CROSS]


def test_a_submit_issues_as_many_statements_with_3000_held_jobs_as_with_none(make_farm):
    farm = make_farm()
    _arm64(farm)
    _submit(farm)  # the first reads what the next ones find kept: its tree, the workers
    empty = _statements(farm, lambda: _submit(farm))
    _flood(farm, 3000)
    assert _statements(farm, lambda: _submit(farm)) == empty


def test_a_ring_from_another_thread_wakes_the_placers_wait():
    bell = Doorbell()

    async def wait_for_a_ring():
        bell.bind()
        threading.Thread(target=bell.ring).start()
        await bell.wait(timeout_s=3600)  # returns on the ring, not the timeout

    asyncio.run(asyncio.wait_for(wait_for_a_ring(), timeout=60))
