"""The result cache as the controller decides it: a target whose inputs (source, target,
cargo spec, variables' values) and builder image are those of an earlier successful
build of the same tenant is born succeeded with that build's artifacts; anything else
misses and queues for a worker. A real SQLite store; small fakes for the broker."""

import base64
import hashlib

import pytest
from farm_fakes import FakeEvents, FakeQueue, make_api
from postgres_server import secrets_key

from crossfarm.controller import jobs, result_cache
from crossfarm.controller.builds import list_artifacts, submit_build
from crossfarm.controller.farm import Farm
from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store import Store
from crossfarm.controller.store.jobs import Outcome
from crossfarm.shared import keys
from crossfarm.shared.arch import Arch, BuildMode, Placement
from crossfarm.shared.ids import JobId, SourceDigest
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import (
    ArtifactEntry,
    BuildRequest,
    BuildView,
    CargoSpec,
    Event,
    JobFinished,
    JobStarted,
    Manifest,
    SourceStatus,
    WorkerHeartbeat,
)

X86 = "x86_64-unknown-linux-gnu"
SOURCE = SourceDigest("0123456789abcdef" * 4)
OTHER_SOURCE = SourceDigest("fedcba9876543210" * 4)
NO_LOCK = SourceDigest("00112233445566778899aabbccddeeff" * 2)
IMAGE = "sha256:" + "1" * 64
NEW_IMAGE = "sha256:" + "2" * 64
AMD64 = keys.QueueKey(Arch.AMD64).name


class FakeStorage:
    def presign_get(self, key, expires_s):
        return f"https://s3.test/{key}"


def _store(url, secrets_key=None):
    store = Store(url, secrets_key)
    for tenant in ("default", "other"):
        for digest in (SOURCE, OTHER_SOURCE):
            store.sources.add_tree(SourceStatus(digest=digest, files=2, total_bytes=10,
                                                locked=True), tenant)
        store.sources.add_tree(SourceStatus(digest=NO_LOCK, files=1, total_bytes=5), tenant)
    return store


@pytest.fixture
def farm(database_url):
    """On SQLite and on PostgreSQL (tests/conftest.py)."""
    settings = ControllerSettings(database_url=database_url,
                                  default_placement=Placement.NATIVE)
    store = _store(settings.database_url, secrets_key(database_url))
    farm = Farm(settings=settings, store=store, queue=FakeQueue(), events=FakeEvents(),
                storage=FakeStorage())
    _worker_online(farm, IMAGE)
    yield farm
    store.close()


def _worker_online(farm, image_id, name="w1", mode=BuildMode.NATIVE, queue=AMD64):
    farm.store.workers.heartbeat(name, WorkerHeartbeat(
        hostname=name, arch="amd64", queues={queue: mode}, cpus=4, memory_bytes=8 << 30,
        builder_image="crossfarm/builder:1", builder_image_id=image_id, targets=[X86],
        version="0.1.0", concurrency=1), fresh_start=True)


def _request(**fields):
    return BuildRequest(**{"source": SOURCE, "targets": [X86], **fields})


def _build(farm, request, tenant="default", image_id=IMAGE, state=BuildState.SUCCEEDED):
    """Submit `request` and have a worker build it with `image_id`, ending in `state`."""
    build = submit_build(farm, request, tenant)
    job = build.jobs[0]
    assert job.state is BuildState.QUEUED
    verdict = jobs.start(farm, job.job_id, JobStarted(
        attempt=1, worker="w1", hostname="w1", mode=BuildMode.NATIVE, consumed_from=AMD64))
    manifest = Manifest(
        build_id=build.build_id, job_id=job.job_id, target=X86, attempt=1, profile_dir="debug",
        image_id=image_id, artifacts=[ArtifactEntry(
            name="hello", size=3, sha256="ab" * 32,
            key=keys.artifact_key(build.build_id, X86, 1, "hello"))])
    jobs.report_finished(farm, JobId(job.job_id), JobFinished(
        attempt=1, worker="w1", lease=verdict.lease, state=state,
        manifest=manifest if state is BuildState.SUCCEEDED else None))
    return farm.store.builds.get(build.build_id)


def _held(farm):
    """The jobs waiting for the placer to send them to a worker."""
    return [record.view.job_id for record in farm.store.jobs.queued()]


def test_the_same_inputs_again_are_served_the_earlier_builds_artifacts_with_no_worker(farm):
    first = _build(farm, _request())
    second = submit_build(farm, _request())

    [job] = second.jobs
    assert second.state is BuildState.SUCCEEDED
    assert (job.state, job.cached_from, job.worker, job.started_at) == (
        BuildState.SUCCEEDED, first.build_id, None, None)
    assert _held(farm) == []  # nothing for the placer to send
    assert farm.queue.sent == []
    [served] = list_artifacts(farm, second.build_id, "default")
    [built] = list_artifacts(farm, first.build_id, "default")
    assert served == built  # the same object, the same sha256


def test_a_served_job_says_where_its_artifacts_come_from(farm):
    first = _build(farm, _request())
    [job] = submit_build(farm, _request()).jobs
    assert job.placed == (f"cached: build {first.build_id} made it from the same inputs "
                          "with this image")
    assert job.exit_code == 0


def test_a_served_build_is_served_from_the_build_a_worker_ran_not_from_another_hit(farm):
    first = _build(farm, _request())
    submit_build(farm, _request())
    [job] = submit_build(farm, _request()).jobs
    assert job.cached_from == first.build_id


@pytest.mark.parametrize("changed", [
    {"source": OTHER_SOURCE},
    {"cargo": CargoSpec(profile="release")},
    {"cargo": CargoSpec(features=["simd"])},
    {"cargo": CargoSpec(all_features=True)},
    {"cargo": CargoSpec(no_default_features=True)},
    {"cargo": CargoSpec(cargo_args=["--locked"])},
    {"env": {"API_KEY": "two"}},
    {"env": {"API_KEY": "one", "MORE": "x"}},
    {"target_env": {X86: {"API_KEY": "two"}}},
], ids=["source", "profile", "feature", "all-features", "no-default-features", "cargo-args",
        "env-value", "env-added", "target-env-value"])
def test_changing_any_one_input_misses_and_the_job_queues_for_a_worker(farm, changed):
    _build(farm, _request(env={"API_KEY": "one"}))
    [job] = submit_build(farm, _request(**{"env": {"API_KEY": "one"}, **changed})).jobs
    assert (job.state, job.cached_from) == (BuildState.QUEUED, None)
    assert _held(farm) == [job.job_id]


def test_a_variable_set_for_the_target_or_for_all_is_the_same_input(farm):
    _build(farm, _request(env={"API_KEY": "one"}))
    [job] = submit_build(farm, _request(target_env={X86: {"API_KEY": "one"}})).jobs
    assert job.state is BuildState.SUCCEEDED


def test_another_tenant_never_hits_an_entry_of_this_one(farm):
    _build(farm, _request(), tenant="default")
    [job] = submit_build(farm, _request(), "other").jobs
    assert (job.state, job.cached_from) == (BuildState.QUEUED, None)


def test_no_cache_builds_again_and_its_result_serves_later_builds(farm):
    first = _build(farm, _request())
    [job] = submit_build(farm, _request(cache=False)).jobs
    assert (job.state, job.cached_from) == (BuildState.QUEUED, None)
    assert submit_build(farm, _request()).jobs[0].cached_from == first.build_id


@pytest.mark.parametrize("state", [BuildState.FAILED, BuildState.CANCELLED])
def test_an_earlier_build_that_did_not_succeed_is_never_a_hit(farm, state):
    _build(farm, _request(), state=state)
    [job] = submit_build(farm, _request()).jobs
    assert (job.state, job.cached_from) == (BuildState.QUEUED, None)


def test_a_build_cancelled_before_any_worker_ran_it_is_never_a_hit(farm):
    queued = submit_build(farm, _request())
    jobs.finish(farm, queued.jobs[0].job_id, 1, Outcome(BuildState.CANCELLED, reason="test"))
    assert submit_build(farm, _request()).jobs[0].state is BuildState.QUEUED


def test_when_the_workers_build_with_another_image_now_it_misses(farm):
    _build(farm, _request())
    _worker_online(farm, NEW_IMAGE)
    [job] = submit_build(farm, _request()).jobs
    assert (job.state, job.cached_from) == (BuildState.QUEUED, None)


def test_artifacts_of_an_older_worker_that_named_no_image_are_never_served(farm):
    _build(farm, _request(), image_id=None)
    assert submit_build(farm, _request()).jobs[0].state is BuildState.QUEUED


def test_with_no_worker_online_for_the_queue_it_misses(farm):
    _build(farm, _request())
    farm.store.workers.set_drain("w1", True)
    assert submit_build(farm, _request()).jobs[0].state is BuildState.QUEUED


def test_an_emulating_worker_serves_no_hit_as_its_heartbeat_names_another_image(farm):
    _build(farm, _request())
    farm.store.workers.set_drain("w1", True)
    _worker_online(farm, IMAGE, name="qemu", mode=BuildMode.EMULATED,
                   queue=keys.QueueKey(Arch.AMD64, BuildMode.EMULATED).name)
    request = _request(placement=Placement.EMULATE_OK)
    [job] = submit_build(farm, request).jobs
    assert job.queue == keys.QueueKey(Arch.AMD64, BuildMode.EMULATED)
    assert job.state is BuildState.QUEUED


def test_a_tree_without_a_cargo_lock_is_never_served_as_it_resolves_anew_each_build(farm):
    _build(farm, _request(source=NO_LOCK))
    [job] = submit_build(farm, _request(source=NO_LOCK)).jobs
    assert (job.state, job.cached_from) == (BuildState.QUEUED, None)


def test_a_build_partly_served_queues_only_its_other_targets(farm):
    first = _build(farm, _request())
    arm = "aarch64-unknown-linux-gnu"
    build = submit_build(farm, _request(targets=[X86, arm]))
    states = {job.target: (job.state, job.cached_from) for job in build.jobs}
    assert states == {X86: (BuildState.SUCCEEDED, first.build_id),
                      arm: (BuildState.QUEUED, None)}
    assert build.state is BuildState.RUNNING
    # the answer is made from the rows inserted, the served job's manifest included
    assert build.model_dump_json() == farm.store.builds.get(build.build_id).model_dump_json()


def test_a_build_served_whole_keeps_no_sealed_values_as_no_job_will_run(farm):
    _build(farm, _request(env={"API_KEY": "one"}))
    build = submit_build(farm, _request(env={"API_KEY": "one"}))
    assert build.state is BuildState.SUCCEEDED
    assert build.env_names == ["API_KEY"]
    assert farm.store.builds.settings(build.build_id, X86).env == {}


def test_served_artifacts_are_counted_once_against_the_artifact_quota(farm):
    _build(farm, _request())
    before = farm.store.usage.artifact_bytes("default")
    submit_build(farm, _request())
    assert farm.store.usage.artifact_bytes("default") == before == 3


def test_the_key_changes_with_each_input(farm):
    base = {"source": SOURCE, "target": X86, "cargo": CargoSpec(), "env": {"A": "1"}}
    changed = [{"source": OTHER_SOURCE}, {"target": "aarch64-unknown-linux-gnu"},
               {"cargo": CargoSpec(profile="release")}, {"cargo": CargoSpec(features=["f"])},
               {"cargo": CargoSpec(cargo_args=["--bin=x"])}, {"env": {"A": "2"}},
               {"cargo": CargoSpec(command="test")},
               {"cargo": CargoSpec(command="test", no_run=True)},
               {"cargo": CargoSpec(toolchain="1.63")},
               {"env": {"B": "1"}}, {"env": {}}]
    keys_seen = {result_cache.inputs_key(farm, **base)}
    for change in changed:
        keys_seen.add(result_cache.inputs_key(farm, **{**base, **change}))
    assert len(keys_seen) == 1 + len(changed)
    assert result_cache.inputs_key(farm, **base) == result_cache.inputs_key(farm, **base)


def test_the_key_is_keyed_by_the_farms_secret_so_values_cannot_be_guessed_from_it(tmp_path):
    digests = []
    for n in range(2):
        secret = base64.urlsafe_b64encode(bytes([n]) * 32).decode()
        store = _store(f"sqlite:///{tmp_path}/farm{n}.db", secret)
        farm = Farm(settings=ControllerSettings(), store=store, queue=None, events=None,
                    storage=None)
        digests.append(result_cache.inputs_key(farm, SOURCE, X86, CargoSpec(), {"A": "1"}))
        store.close()
    assert digests[0] != digests[1]


def test_the_record_never_holds_a_variables_value_in_clear(farm, tmp_path):
    secret = "hunter2-a-value-nobody-should-read"
    _build(farm, _request(env={"API_KEY": secret}))
    submit_build(farm, _request(env={"API_KEY": secret}))
    farm.store.close()  # flush SQLite's write-ahead log into the files read below
    stored = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.is_file())
    assert secret.encode() not in stored


# Through the API: what a client sees of a served build.

LOCK = b"# This file is automatically @generated by Cargo.\nversion = 4\n"
MAIN = b"fn main() {}\n"


def _tree(*files):
    return {"entries": [{"path": path, "kind": "file", "size": len(data),
                         "sha256": hashlib.sha256(data).hexdigest()} for path, data in files]}


@pytest.fixture
def api(tmp_path):
    api = make_api(tmp_path, default_placement=Placement.NATIVE)
    _worker_online(api.farm, IMAGE)
    for data in (LOCK, MAIN):
        assert api.put(f"/v1/blobs/{hashlib.sha256(data).hexdigest()}",
                       content=data).status_code == 204
    yield api
    api.farm.store.close()


@pytest.mark.parametrize(("files", "locked"), [
    ((("Cargo.lock", LOCK), ("src/main.rs", MAIN)), True),
    ((("src/main.rs", MAIN),), False),
    ((("sub/Cargo.lock", LOCK), ("src/main.rs", MAIN)), False),
], ids=["root-lock", "no-lock", "nested-lock-only"])
def test_a_source_says_whether_a_cargo_lock_at_its_root_pins_its_dependencies(
        api, files, locked):
    reply = api.post("/v1/sources", json=_tree(*files))
    assert reply.status_code == 201, reply.text
    assert reply.json()["locked"] is locked
    assert api.get(f"/v1/sources/{reply.json()['digest']}").json()["locked"] is locked


def _frames(response):
    frames = []
    for block in response.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            frames.append(Event.model_validate_json(fields["data"]))
    return frames


def test_a_served_build_reads_as_succeeded_from_its_view_its_events_and_its_artifacts(api):
    source = api.post("/v1/sources", json=_tree(("Cargo.lock", LOCK), ("src/main.rs", MAIN)))
    request = _request(source=source.json()["digest"])
    first = _build(api.farm, request)

    reply = api.post("/v1/builds", json=request.model_dump(mode="json"))
    assert reply.status_code == 201, reply.text
    view = BuildView.model_validate_json(reply.text)
    assert view.state is BuildState.SUCCEEDED
    assert view.jobs[0].cached_from == first.build_id

    events = _frames(api.get(f"/v1/builds/{view.build_id}/events"))
    assert [(e.kind, e.state) for e in events] == [
        ("state", BuildState.SUCCEEDED), ("log", None), ("end", None)]
    assert f"served from the result cache: the artifacts of build {first.build_id}" in (
        events[1].line)
    served = api.get(f"/v1/builds/{view.build_id}/artifacts").json()
    assert served == api.get(f"/v1/builds/{first.build_id}/artifacts").json()


def test_a_farm_with_the_result_cache_off_builds_everything_on_a_worker(farm):
    _build(farm, _request())
    off = Farm(settings=farm.settings.model_copy(update={"result_cache": False}),
               store=farm.store, queue=farm.queue, events=farm.events, storage=farm.storage)
    [job] = submit_build(off, _request()).jobs
    assert (job.state, job.cached_from) == (BuildState.QUEUED, None)
