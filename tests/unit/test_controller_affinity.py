"""Affinity through the placer: a build of a project goes back to the worker that keeps
its warm target dir while that worker has a free slot, waits a short bound while it is
busy, then goes to any worker of its queue; each choice is said. A real SQLite store;
fakes for the broker and the event stream."""

from datetime import timedelta

import pytest
from farm_fakes import FakeEvents, FakeQueue

from crossfarm.controller import jobs, placer
from crossfarm.controller.builds import submit_build
from crossfarm.controller.farm import Farm
from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store import Store
from crossfarm.controller.store.jobs import Outcome
from crossfarm.shared import keys
from crossfarm.shared.arch import BuildMode, Placement
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import BuildRequest, JobStarted, SourceStatus, WorkerHeartbeat

X86 = "x86_64-unknown-linux-gnu"
DIGEST = "0123456789abcdef" * 4
AMD64 = "crossfarm.builds.amd64"
PROJECT = "app,greet"
KEY = keys.affinity_key("default", PROJECT, X86, "dev")


class FakeStorage:
    def exists(self, key):
        return True


@pytest.fixture
def make_farm(tmp_path):
    stores = []

    def make(**fields):
        settings = ControllerSettings(
            database_url=f"sqlite:///{tmp_path}/crossfarm.db",
            **{"default_placement": Placement.NATIVE, "lost_after_s": 3600,
               "affinity_wait_s": 10, **fields})
        store = Store(settings.database_url)
        stores.append(store)
        store.sources.add_tree(SourceStatus(digest=DIGEST, files=1, total_bytes=10))
        queue = FakeQueue()
        return Farm(settings=settings, store=store, queue=queue, events=FakeEvents(queue),
                    storage=FakeStorage())

    yield make
    for store in stores:
        store.close()


def _worker(farm, name, warm=(), running=(), at=None):
    info = WorkerHeartbeat(
        hostname=name, arch="amd64", queues={AMD64: BuildMode.NATIVE}, cpus=4,
        memory_bytes=8 * 1024**3, builder_image="crossfarm/builder:1", targets=[X86],
        version="0.1.0", concurrency=1, running=list(running), warm=list(warm))
    farm.store.workers.heartbeat(name, info, fresh_start=True, at=at)


def _submit(farm, project=PROJECT, tenant="default"):
    build = submit_build(farm, BuildRequest(source=DIGEST, targets=[X86], project=project),
                         tenant=tenant, any_source=True)
    [job] = build.jobs
    return build, job


def _view(farm, build):
    [job] = farm.store.builds.get(BuildId(build.build_id)).jobs
    return job


def _said(farm):
    return [e.line for _, e in farm.events.appended if e.line]


def test_a_build_goes_back_to_the_worker_keeping_its_warm_dir_and_says_so(make_farm):
    farm = make_farm()
    _worker(farm, "w1")
    _worker(farm, "w2", warm=[KEY])
    build, job = _submit(farm)

    placer.tick(farm, now=job.queued_at)

    [(message, queue)] = farm.queue.sent
    assert queue == f"{AMD64}@w2"
    assert (message.project, message.tenant) == (PROJECT, "default")
    placed = _view(farm, build).placed
    assert placed == "affinity: worker w2 keeps this project's warm target dir and has a free slot"
    assert f"crossfarm: {placed}" in _said(farm)


def test_while_the_keeper_is_busy_the_build_waits_the_bound_then_goes_anywhere_and_says_why(
    make_farm
):
    farm = make_farm()
    _worker(farm, "w1")
    _worker(farm, "w2", warm=[KEY], running=[keys.fetch_task_id("0123456789abcdef")])
    build, job = _submit(farm)

    placer.tick(farm, now=job.queued_at + timedelta(seconds=5))
    assert farm.queue.sent == []  # within the bound: held for w2

    placer.tick(farm, now=job.queued_at + timedelta(seconds=11))
    [(_, queue)] = farm.queue.sent
    assert queue == AMD64
    placed = _view(farm, build).placed
    assert placed == ("any amd64 worker: w2 keep(s) this project's warm target dir but stayed "
                      "busy past the 10 s affinity bound")
    assert f"crossfarm: {placed}" in _said(farm)


def test_a_build_naming_no_project_or_of_another_tenant_goes_to_the_shared_queue(make_farm):
    farm = make_farm()
    _worker(farm, "w1")
    _worker(farm, "w2", warm=[KEY])
    _, unnamed = _submit(farm, project=None)
    _, theirs = _submit(farm, tenant="other")

    placer.tick(farm, now=max(unnamed.queued_at, theirs.queued_at))

    assert sorted(queue for _, queue in farm.queue.sent) == [AMD64, AMD64]
    assert not any("affinity" in line for line in _said(farm))


def test_a_build_sent_to_a_keeper_that_goes_away_before_starting_it_goes_anywhere(make_farm):
    farm = make_farm(lost_after_s=30)
    _worker(farm, "w2", warm=[KEY])
    build, job = _submit(farm)
    placer.tick(farm, now=job.queued_at)
    assert [queue for _, queue in farm.queue.sent] == [f"{AMD64}@w2"]

    later = job.queued_at + timedelta(seconds=31)
    _worker(farm, "w1", at=later)
    placer.tick(farm, now=later)  # w2 is lost: the job is held again, under attempt 2
    placer.tick(farm, now=later)

    moved = _view(farm, build)
    assert moved.attempt == 2
    assert moved.placed == ("any amd64 worker: w2, which keeps this project's warm target dir, "
                            "went away before it started the job")
    assert [(m.attempt, queue) for m, queue in farm.queue.sent] == [
        (1, f"{AMD64}@w2"), (2, AMD64)]


def test_a_build_its_keeper_does_not_start_within_the_bound_goes_anywhere_once(make_farm):
    farm = make_farm()
    _worker(farm, "w1")
    _worker(farm, "w2", warm=[KEY])
    build, job = _submit(farm)
    placer.tick(farm, now=job.queued_at)  # to w2, which takes another job first

    later = job.queued_at + timedelta(seconds=11)
    placer.tick(farm, now=later)
    placer.tick(farm, now=later)

    moved = _view(farm, build)
    assert moved.placed == ("any amd64 worker: w2, which keeps this project's warm target "
                            "dir, did not start it within the 10 s affinity bound")
    # the next attempt goes to the shared queue though w2 still has a free slot
    assert [(m.attempt, queue) for m, queue in farm.queue.sent] == [
        (1, f"{AMD64}@w2"), (2, AMD64)]


def test_a_keeper_whose_start_is_recorded_but_not_yet_in_its_heartbeat_counts_as_busy(
    make_farm
):
    farm = make_farm()
    _worker(farm, "w1")
    _worker(farm, "w2", warm=[KEY])
    _, job = _submit(farm)
    placer.tick(farm, now=job.queued_at)
    started = jobs.start(farm, JobId(job.job_id), JobStarted(
        attempt=1, worker="w2", hostname="w2", mode=BuildMode.NATIVE, consumed_from=AMD64))
    assert started.proceed  # recorded; w2's next heartbeat has not come yet

    _, second = _submit(farm)
    placer.tick(farm, now=second.queued_at)

    assert [queue for _, queue in farm.queue.sent] == [f"{AMD64}@w2"]  # held for w2


def test_a_keeper_whose_last_job_ended_is_free_before_its_heartbeat_says_so(make_farm):
    farm = make_farm()
    _worker(farm, "w1")
    _, first = _submit(farm)
    placer.tick(farm, now=first.queued_at)
    jobs.start(farm, JobId(first.job_id), JobStarted(
        attempt=1, worker="w1", hostname="w1", mode=BuildMode.NATIVE, consumed_from=AMD64))
    # its heartbeat lists that job and the dir it kept; then the job ends
    _worker(farm, "w1", warm=[KEY], running=[keys.task_id(JobId(first.job_id), 1)])
    farm.store.jobs.finish(JobId(first.job_id), 1, Outcome(BuildState.SUCCEEDED, exit_code=0))

    build, second = _submit(farm)
    placer.tick(farm, now=second.queued_at)

    assert [queue for _, queue in farm.queue.sent] == [AMD64, f"{AMD64}@w1"]
    assert "affinity: worker w1 keeps this project's warm target dir" in _view(
        farm, build).placed
