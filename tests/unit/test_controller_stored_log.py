"""The stored log of a job's last attempt: what outlives the live event stream. A real
SQLite store; the object store is a dict (tests/fakes.py)."""

import pytest
from fakes import FakeStorage
from farm_fakes import FakeEvents, FakeQueue, make_api
from postgres_server import secrets_key

from crossfarm.controller import builds, jobs
from crossfarm.controller.farm import Farm
from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store import Store
from crossfarm.shared import keys
from crossfarm.shared.arch import BuildMode, Placement
from crossfarm.shared.errors import Conflict, NotFound
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import BuildRequest, JobFinished, JobStarted, SourceStatus

X86 = "x86_64-unknown-linux-gnu"
DIGEST = "0123456789abcdef" * 4


@pytest.fixture
def farm(tmp_path):
    url = f"sqlite:///{tmp_path}/db.sqlite"
    settings = ControllerSettings(database_url=url, default_placement=Placement.NATIVE)
    store = Store(url, secrets_key(url))
    store.sources.add_tree(SourceStatus(digest=DIGEST, files=1, total_bytes=10))
    yield Farm(settings=settings, store=store, queue=FakeQueue(), events=FakeEvents(),
               storage=FakeStorage())
    store.close()


def _build(farm) -> tuple[BuildId, JobId]:
    build = builds.submit_build(farm, BuildRequest(source=DIGEST, targets=[X86]))
    return build.build_id, JobId(build.jobs[0].job_id)


def _run(farm, job_id: JobId, state: BuildState = BuildState.FAILED) -> None:
    verdict = jobs.start(farm, job_id, JobStarted(
        attempt=1, worker="w1", hostname="h1", mode=BuildMode.NATIVE,
        consumed_from="crossfarm.builds.amd64"))
    assert verdict.lease
    jobs.report_finished(farm, job_id, JobFinished(
        attempt=1, worker="w1", lease=verdict.lease, state=state, exit_code=101,
        reason="cargo failed"))


def test_an_ended_jobs_stored_log_is_given_by_a_fresh_url(farm):
    build_id, job_id = _build(farm)
    _run(farm, job_id)
    key = keys.log_key(build_id, X86, 1)
    farm.storage.put_bytes(key, b"error[E0308]: mismatched types\n")
    url = builds.stored_log_url(farm, build_id, X86)
    assert url.startswith(f"http://storage.invalid/{key}?expires=")


def test_a_job_not_ended_has_no_stored_log_yet_and_says_where_to_look(farm):
    build_id, _ = _build(farm)
    with pytest.raises(Conflict, match="follow the build's events"):
        builds.stored_log_url(farm, build_id, X86)


def test_an_unknown_target_and_a_missing_log_are_named(farm):
    build_id, job_id = _build(farm)
    _run(farm, job_id)
    with pytest.raises(NotFound, match=f"its targets: {X86}"):
        builds.stored_log_url(farm, build_id, "aarch64-unknown-linux-gnu")
    with pytest.raises(NotFound, match="before its worker stored one"):
        builds.stored_log_url(farm, build_id, X86)


def test_another_tenants_build_log_is_not_found(farm):
    build_id, job_id = _build(farm)
    _run(farm, job_id)
    farm.storage.put_bytes(keys.log_key(build_id, X86, 1), b"secret output\n")
    with pytest.raises(NotFound):
        builds.stored_log_url(farm, build_id, X86, tenant="someone-else")


def test_the_api_redirects_to_the_stored_log(tmp_path):
    api = make_api(tmp_path, default_placement=Placement.NATIVE)
    api.farm.store.sources.add_tree(SourceStatus(digest=DIGEST, files=1, total_bytes=10))
    build_id, job_id = _build(api.farm)
    _run(api.farm, job_id)
    api.farm.storage.put_bytes(keys.log_key(build_id, X86, 1), b"log\n")
    reply = api.get(f"/v1/builds/{build_id}/log", params={"target": X86})
    assert reply.status_code == 307
    assert reply.headers["location"].startswith(f"http://storage.invalid/builds/{build_id}/")
    assert api.get(f"/v1/builds/{build_id}/log").status_code == 422  # which target?
    running_id, _ = _build(api.farm)
    assert api.get(f"/v1/builds/{running_id}/log", params={"target": X86}).status_code == 409
