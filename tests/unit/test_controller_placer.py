"""The placer through the use-cases it serves: submit_build places each job from the
fleet's heartbeats, tick keeps it where a worker can take it. A real SQLite store;
in-test fakes for the broker, the event stream and the object store."""

import time
from datetime import timedelta

import pytest
from sqlalchemy import event

from crossfarm.controller import jobs, placer
from crossfarm.controller.builds import submit_build
from crossfarm.controller.farm import Farm
from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store import Store
from crossfarm.shared.arch import BuildMode, Placement
from crossfarm.shared.errors import Conflict
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import (
    BuildRequest,
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


class FakeQueue:
    """Records each (message, queue) the controller sends to the broker."""

    def __init__(self):
        self.sent = []

    def enqueue(self, message, queue):
        self.sent.append((message, queue.name))


class FakeEvents:
    """Records each (build_id, event) appended to a build's stream."""

    def __init__(self, broker):
        self.broker = broker
        self.appended = []
        self.cancelled = []

    def append(self, build_id, event):
        self.appended.append((build_id, event))
        return f"{len(self.appended)}-0"

    def raise_cancel(self, job_id):
        self.cancelled.append(job_id)

    def set_attempt(self, job_id, attempt):
        self.attempts = {**getattr(self, "attempts", {}), job_id: attempt}

    def queue_depth(self, queue):
        # The broker's view: every message sent to that queue and still there.
        return sum(1 for _, sent_to in self.broker.sent if sent_to == queue)

    def logs(self):
        return [event.line for _, event in self.appended if event.kind == "log"]


class FakeStorage:
    def exists(self, key):
        return True


def _settings(tmp_path, **fields):
    # Long bounds unless a test shortens one, so a `now` in the future moves nothing by itself.
    defaults = {"default_placement": Placement.NATIVE, "pickup_bound_s": 3600,
                "lost_after_s": 3600}
    return ControllerSettings(database_url=f"sqlite:///{tmp_path}/crossfarm.db",
                              **{**defaults, **fields})


@pytest.fixture
def make_farm(tmp_path):
    stores = []

    def make(**fields):
        settings = _settings(tmp_path, **fields)
        store = Store(settings.database_url)
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


def _worker(farm, name, arch, queues):
    info = WorkerHeartbeat(
        hostname=name, arch=arch, queues=queues, cpus=4, memory_bytes=8 * 1024**3,
        builder_image="crossfarm/builder:1", targets=[X86, ARM], version="0.1.0",
        concurrency=1,
    )
    farm.store.workers.heartbeat(name, info, fresh_start=True)


def _amd64_with_arm64_cross(farm, name="amd64-1"):
    _worker(farm, name, "amd64", {AMD64_QUEUE: N, ARM64_CROSS: C})


def _arm64(farm, name="arm64-1"):
    _worker(farm, name, "arm64", {ARM64_QUEUE: N})


def _submit(farm, targets=(ARM,), **fields):
    return submit_build(farm, BuildRequest(source=DIGEST, targets=list(targets), **fields))


def _job(farm, build, target=ARM):
    [job] = [j for j in farm.store.builds.get(BuildId(build.build_id)).jobs if j.target == target]
    return job


def test_a_cross_ok_arm64_job_with_only_an_amd64_cross_worker_goes_to_the_cross_queue(farm):
    _amd64_with_arm64_cross(farm)

    build = _submit(farm, placement=Placement.CROSS_OK)

    job = _job(farm, build)
    assert (job.queue.name, job.placement, job.attempt) == (ARM64_CROSS, Placement.CROSS_OK, 1)
    assert job.placed == "cross: no arm64 worker online; cross-ok allows a cross toolchain"
    assert job.waiting is None
    [(message, queue)] = farm.queue.sent
    assert (message.job_id, message.attempt, queue) == (job.job_id, 1, ARM64_CROSS)


def test_each_target_of_a_build_is_placed_on_its_own(farm):
    _amd64_with_arm64_cross(farm)

    build = _submit(farm, targets=(X86, ARM), placement=Placement.CROSS_OK)

    assert {j.target: j.queue.name for j in build.jobs} == {X86: AMD64_QUEUE, ARM: ARM64_CROSS}
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
    assert [queue for _, queue in farm.queue.sent] == [ARM64_QUEUE]

    placer.tick(farm)

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
    assert job.waiting == "queued: position 1 in crossfarm.builds.arm64"
    assert len(farm.queue.sent) == 1


def test_jobs_waiting_on_one_queue_are_numbered_oldest_first(farm):
    _arm64(farm)
    first = _submit(farm)
    second = _submit(farm)
    other = _submit(farm, targets=(X86,))

    placer.tick(farm)

    assert _job(farm, first).waiting == "queued: position 1 in crossfarm.builds.arm64"
    assert _job(farm, second).waiting == "queued: position 2 in crossfarm.builds.arm64"
    assert _job(farm, other, X86).waiting.endswith("; position 1 in crossfarm.builds.amd64")


def test_a_cross_ok_job_whose_arm64_worker_is_lost_is_requeued_on_the_cross_queue(make_farm):
    farm = make_farm(lost_after_s=2)
    _arm64(farm)
    _amd64_with_arm64_cross(farm)
    build = _submit(farm, placement=Placement.CROSS_OK)
    assert _job(farm, build).queue.name == ARM64_QUEUE

    # Worker liveness is judged on the wall clock (see the next test), so the arm64
    # worker really has to fall silent while the amd64 one keeps beating.
    time.sleep(2.2)
    _amd64_with_arm64_cross(farm)
    placer.tick(farm)

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


def test_tick_logs_a_jobs_waiting_text_when_it_changes_and_only_then(farm):
    build = _submit(farm, placement=Placement.NATIVE)
    assert farm.events.logs() == []

    placer.tick(farm)
    [line] = farm.events.logs()
    assert line.startswith("crossfarm: waiting: no arm64 worker online")
    build_id, event = farm.events.appended[-1]
    assert (build_id, event.kind, event.target) == (build.build_id, "log", ARM)

    placer.tick(farm)
    placer.tick(farm)
    assert len(farm.events.logs()) == 1

    _arm64(farm)
    placer.tick(farm)
    assert farm.events.logs()[1:] == ["crossfarm: queued: position 1 in crossfarm.builds.arm64"]


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
    job = _job(farm, build)
    assert jobs.start(farm, JobId(job.job_id), JobStarted(
        attempt=job.attempt, worker=worker, hostname=worker, mode=mode,
        consumed_from=queue)).proceed
    return _job(farm, build)


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
    assert [q for _, q in farm.queue.sent] == [ARM64_QUEUE, ARM64_QUEUE]
    assert farm.events.attempts[JobId(job.job_id)] == 2
    assert any("re-running as attempt 2" in (e.line or "") for _, e in farm.events.appended)


def test_a_rerun_jobs_message_carries_the_builds_variables_until_the_build_ends(make_farm):
    farm = make_farm(lost_after_s=30)
    _arm64(farm)
    build = _submit(farm, placement=Placement.NATIVE, env={"TOKEN": "s3cret-abc"},
                    target_env={ARM: {"PIN": "k1"}})
    running = _start(farm, build)

    placer.tick(farm, now=running.started_at + timedelta(seconds=31))

    [first, rerun] = [message for message, _ in farm.queue.sent]
    assert rerun.attempt == 2
    assert rerun.env == first.env == {"TOKEN": "s3cret-abc", "PIN": "k1"}
    _arm64(farm)
    _start(farm, build)
    jobs.report_finished(farm, JobId(running.job_id),
                         JobFinished(attempt=2, worker="arm64-1", state=BuildState.SUCCEEDED,
                                     exit_code=0))
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
                                                            state=BuildState.SUCCEEDED))
    assert _job(farm, build).state is BuildState.QUEUED


def test_a_queued_job_whose_message_the_broker_lost_is_resent(make_farm):
    farm = make_farm(reconcile_after_s=30)
    _arm64(farm)
    build = _submit(farm, placement=Placement.NATIVE)
    job = _job(farm, build)
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
    assert (job.state, job.attempt) == (BuildState.QUEUED, 1)  # accepted, not failed
    assert "the broker is unreachable (Error 111 connecting to redis:6379); the job " \
           "stays queued" in farm.events.logs()[-1]

    farm.queue.enqueue = sent  # Redis is back, holding nothing
    placer.tick(farm, now=job.queued_at + timedelta(seconds=31))
    resent = _job(farm, build)
    assert (resent.state, resent.attempt, resent.queue.name) == (BuildState.QUEUED, 2, ARM64_QUEUE)
    assert [q for _, q in farm.queue.sent] == [ARM64_QUEUE]


def test_each_job_message_carries_the_limits_its_tree_was_accepted_under(make_farm):
    farm = make_farm(max_source_files=7, max_file_bytes=4096, max_source_bytes=8192)
    _arm64(farm)
    _submit(farm, placement=Placement.NATIVE)
    [(message, _)] = farm.queue.sent
    assert message.limits == SourceLimits(max_files=7, max_file_bytes=4096,
                                          max_total_bytes=8192)


def test_a_queued_job_whose_message_is_still_there_is_not_resent(make_farm):
    farm = make_farm(reconcile_after_s=30)
    _arm64(farm)
    build = _submit(farm, placement=Placement.NATIVE)

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


def test_a_tick_reads_a_long_queue_in_as_many_statements_as_a_short_one(farm):
    for _ in range(3):
        _submit(farm)
    placer.tick(farm)  # the first tick writes each job's waiting text
    short = _statements(farm, lambda: placer.tick(farm))
    for _ in range(40):
        _submit(farm)
    placer.tick(farm)
    assert _statements(farm, lambda: placer.tick(farm)) == short
    assert len(farm.store.jobs.queued()) == 43
