"""The job lifecycle's report checks: only the worker holding an attempt's lease (the
secret its start was answered with) reports its outcome, and a manifest names that
attempt's own outputs. A real SQLite store; small in-test fakes for the broker and the
event stream."""

import hashlib
from typing import NamedTuple

import pytest
from farm_fakes import FakeEvents, FakeQueue
from postgres_server import secrets_key
from pydantic import ValidationError

from crossfarm.controller import jobs
from crossfarm.controller.builds import submit_build
from crossfarm.controller.farm import Farm
from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store import Store
from crossfarm.controller.store.jobs import JobRecord
from crossfarm.shared import keys
from crossfarm.shared.arch import BuildMode, Placement
from crossfarm.shared.errors import Conflict, InvalidRequest
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import (
    ArtifactEntry,
    BuildRequest,
    CargoReuse,
    JobFinished,
    JobStarted,
    Manifest,
    SourceStatus,
    StartVerdict,
)

X86 = "x86_64-unknown-linux-gnu"
DIGEST = "0123456789abcdef" * 4
SHA = "ab" * 32


class FakeStorage:
    def exists(self, key):
        return True


@pytest.fixture
def farm(database_url):
    """On SQLite and on PostgreSQL (tests/conftest.py)."""
    settings = ControllerSettings(database_url=database_url,
                                  default_placement=Placement.NATIVE)
    store = Store(settings.database_url, secrets_key(database_url))
    store.sources.add_tree(SourceStatus(digest=DIGEST, files=1, total_bytes=10))
    yield Farm(settings=settings, store=store, queue=FakeQueue(), events=FakeEvents(),
               storage=FakeStorage())
    store.close()


class Held(NamedTuple):
    """A running job's record and the lease secret its worker was given."""

    record: JobRecord
    lease: str


def _start(farm, job_id, attempt=1, worker="w1"):
    """Start an attempt as `worker`; returns the lease secret the controller answers with."""
    verdict = jobs.start(farm, job_id, JobStarted(
        attempt=attempt, worker=worker, hostname="h1", mode=BuildMode.NATIVE,
        consumed_from="crossfarm.builds.amd64"))
    assert verdict.proceed
    assert verdict.lease
    return verdict.lease


@pytest.fixture
def running(farm):
    """A job the worker "w1" started, attempt 1."""
    build = submit_build(farm, BuildRequest(source=DIGEST, targets=[X86]))
    job_id = build.jobs[0].job_id
    lease = _start(farm, job_id)
    return Held(farm.store.jobs.get(job_id), lease)


def _manifest(record, attempt=1, key=None, names=("hello",), **fields):
    build_id, target = record.build_id, record.view.target
    entries = [ArtifactEntry(name=name, size=3, sha256=SHA,
                             key=key or keys.artifact_key(build_id, target, attempt, name))
               for name in names]
    return Manifest(**{"build_id": build_id, "job_id": record.view.job_id, "target": target,
                       "attempt": attempt, "profile_dir": "debug", "artifacts": entries,
                       **fields})


def _finish(farm, held, worker="w1", attempt=1, manifest=None, lease=None):
    """Report success for `held`'s job, with its own lease unless `lease` is given."""
    return jobs.report_finished(farm, JobId(held.record.view.job_id), JobFinished(
        attempt=attempt, worker=worker, lease=lease or held.lease, state=BuildState.SUCCEEDED,
        exit_code=0, manifest=manifest))


def _state(farm, record):
    return farm.store.jobs.get(record.view.job_id).view.state


def test_the_worker_holding_the_attempt_finishes_it_with_its_manifest(farm, running):
    view = _finish(farm, running, manifest=_manifest(running.record))
    assert view.state is BuildState.SUCCEEDED
    assert farm.store.jobs.get(running.record.view.job_id).manifest.artifacts[0].name == "hello"


def test_what_the_worker_found_done_is_kept_and_shown_with_the_job(farm, running):
    reuse = CargoReuse(target_dir="warm", units=61, fresh=60)
    jobs.report_finished(farm, JobId(running.record.view.job_id), JobFinished(
        attempt=1, worker="w1", lease=running.lease, state=BuildState.SUCCEEDED, exit_code=0,
        manifest=_manifest(running.record), reuse=reuse))
    assert farm.store.jobs.get(running.record.view.job_id).view.reuse == reuse
    [job] = farm.store.builds.get(running.record.build_id).jobs
    assert job.reuse == reuse


def test_a_reuse_report_with_more_fresh_units_than_units_is_refused():
    with pytest.raises(ValidationError, match="fresh units"):
        CargoReuse(target_dir="warm", units=1, fresh=2)


def test_another_workers_report_is_refused_and_the_job_runs_on(farm, running):
    with pytest.raises(Conflict, match="held by another worker"):
        _finish(farm, running, worker="w2", manifest=_manifest(running.record))
    assert _state(farm, running.record) is BuildState.RUNNING


def test_a_report_for_a_stale_attempt_is_refused(farm, running):
    with pytest.raises(Conflict, match="attempt 2 is stale"):
        _finish(farm, running, attempt=2)
    assert _state(farm, running.record) is BuildState.RUNNING


def test_a_report_for_a_job_no_worker_started_is_refused(farm):
    build = submit_build(farm, BuildRequest(source=DIGEST, targets=[X86]))
    queued = farm.store.jobs.get(build.jobs[0].job_id)
    with pytest.raises(Conflict, match="never started"):
        _finish(farm, Held(queued, "a guess"))
    assert _state(farm, queued) is BuildState.QUEUED


def test_a_report_with_the_holders_name_but_a_guessed_lease_is_refused(farm, running):
    guess = "A" * 43
    with pytest.raises(Conflict, match="only the worker that started this attempt") as exc:
        _finish(farm, running, lease=guess, manifest=_manifest(running.record))
    assert guess not in exc.value.message
    assert _state(farm, running.record) is BuildState.RUNNING


def test_a_report_without_a_lease_is_refused_before_it_reaches_the_job():
    with pytest.raises(ValidationError, match="lease"):
        JobFinished.model_validate({"attempt": 1, "worker": "w1", "state": "succeeded"})
    with pytest.raises(ValidationError, match="lease"):
        JobFinished(attempt=1, worker="w1", lease="", state=BuildState.SUCCEEDED)


def test_a_new_attempt_gets_a_new_lease_and_the_old_one_stops_working(farm, running):
    job_id = running.record.view.job_id
    farm.store.jobs.retry(job_id, 1, running.record.view.queue, "re-run")
    assert farm.store.jobs.get(job_id).lease_hash is None
    second = Held(farm.store.jobs.get(job_id), _start(farm, job_id, attempt=2))
    assert second.lease != running.lease
    with pytest.raises(Conflict, match="only the worker that started this attempt"):
        _finish(farm, second, attempt=2, lease=running.lease)
    assert _finish(farm, second, attempt=2).state is BuildState.SUCCEEDED


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # reads its files
def test_the_record_keeps_the_leases_hash_never_the_secret(farm, running, tmp_path):
    assert running.record.lease_hash == hashlib.sha256(running.lease.encode()).hexdigest()
    farm.store.close()  # flush SQLite's write-ahead log into the files read below
    stored = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.is_file())
    assert running.lease.encode() not in stored
    assert running.record.lease_hash.encode() in stored


def test_a_verdict_and_a_report_never_show_their_lease_when_logged(running):
    report = JobFinished(attempt=1, worker="w1", lease=running.lease, state=BuildState.FAILED)
    verdict = StartVerdict(proceed=True, lease=running.lease)
    for shown in (repr(report), str(report), repr(verdict), str(verdict)):
        assert running.lease not in shown


@pytest.mark.parametrize("key", [
    "builds/b-0000000000000000/x86_64-unknown-linux-gnu/attempt-1/artifacts/hello",
    "blobs/ab/" + SHA,
    "builds/{build}/x86_64-unknown-linux-gnu/attempt-2/artifacts/hello",
    "builds/{build}/x86_64-unknown-linux-gnu/attempt-1/artifacts/../manifest.json",
], ids=["another-build", "a-source-blob", "another-attempt", "traversal"])
def test_a_manifest_with_a_foreign_key_is_refused_and_the_job_does_not_succeed(
        farm, running, key):
    forged = _manifest(running.record, key=key.format(build=running.record.build_id))
    with pytest.raises(InvalidRequest, match="not under the attempt's own prefix"):
        _finish(farm, running, manifest=forged)
    assert _state(farm, running.record) is BuildState.RUNNING


def _succeeded(farm, tenant="default", names=("hello",)):
    """A build of `tenant` whose job published its own artifacts; returns its record."""
    build = submit_build(farm, BuildRequest(source=DIGEST, targets=[X86]), tenant,
                         any_source=True)
    job_id = build.jobs[0].job_id
    held = Held(farm.store.jobs.get(job_id), _start(farm, job_id))
    _finish(farm, held, manifest=_manifest(held.record, names=names))
    return farm.store.jobs.get(job_id)


def test_a_manifest_may_name_an_identical_artifact_the_tenant_published_before(
        farm, running):
    earlier = _succeeded(farm)
    key = earlier.manifest.artifacts[0].key

    view = _finish(farm, running, manifest=_manifest(running.record, key=key))

    assert view.state is BuildState.SUCCEEDED
    # the object is counted once against the tenant's artifact quota
    assert farm.store.usage.artifact_bytes("default") == 3


@pytest.mark.parametrize("case", ["other-tenant", "other-bytes", "other-size", "unlisted",
                                  "unfinished"])
def test_a_manifest_naming_an_artifact_the_tenant_did_not_publish_is_refused(
        farm, running, case):
    earlier = _succeeded(farm, tenant="globex" if case == "other-tenant" else "default")
    key = earlier.manifest.artifacts[0].key
    if case == "unlisted":  # a name that earlier job never published
        key = key.replace("/hello", "/other")
    if case == "unfinished":  # an object of a job that has not succeeded
        build = submit_build(farm, BuildRequest(source=DIGEST, targets=[X86]))
        key = keys.artifact_key(build.build_id, X86, 1, "hello")
    manifest = _manifest(running.record, key=key)
    changed = {"other-bytes": {"sha256": "cd" * 32}, "other-size": {"size": 4}}.get(case, {})
    manifest = manifest.model_copy(update={"artifacts": [
        manifest.artifacts[0].model_copy(update=changed)]})

    with pytest.raises(InvalidRequest, match="not under the attempt's own prefix"):
        _finish(farm, running, manifest=manifest)
    assert _state(farm, running.record) is BuildState.RUNNING


@pytest.mark.parametrize("fields", [
    {"attempt": 2}, {"build_id": BuildId("b-0000000000000000")}, {"target": "evil"},
], ids=["attempt", "build", "target"])
def test_a_manifest_naming_another_job_or_attempt_is_refused(farm, running, fields):
    forged = _manifest(running.record, **fields)
    with pytest.raises(InvalidRequest, match="names another job or attempt"):
        _finish(farm, running, manifest=forged)
    assert _state(farm, running.record) is BuildState.RUNNING


def test_a_manifest_listing_a_name_twice_is_refused(farm, running):
    with pytest.raises(InvalidRequest, match="twice"):
        _finish(farm, running, manifest=_manifest(running.record, names=("a", "a")))
