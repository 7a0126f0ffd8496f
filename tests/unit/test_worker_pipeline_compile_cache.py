"""run_job with the compile cache on, on the fakes: sccache goes around cargo with its dir
in the job volume, the dir is restored from the store and stored again after a
successful build, the hit rate reaches the log and the outcome; a planted symlink, a
failed build or an image without sccache stores nothing."""

import io
import json
import tarfile

from fakes import FakeCrates, FakeDocker, FakeReporter, FakeStorage, Replay

from crossfarm.shared import keys
from crossfarm.shared.arch import Arch
from crossfarm.shared.ids import BuildId
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import (
    CargoReuse,
    CargoSpec,
    CompileCacheUse,
    JobMessage,
)
from crossfarm.worker.pipeline import Toolbox, run_job
from crossfarm.worker.settings import WorkerSettings

X86 = "x86_64-unknown-linux-gnu"
BUILD = "b-0123456789abcdef"
JOB = "j-0123456789abcdef"
QUEUE = "crossfarm.builds.amd64"
BINARY = f"/work/target/{X86}/debug/app"
CRATE = {
    "Cargo.toml": b'[package]\nname = "app"\nversion = "0.1.0"\n',
    "Cargo.lock": b'version = 3\n\n[[package]]\nname = "app"\nversion = "0.1.0"\n',
    "src/main.rs": b'fn main() { println!("hello"); }\n',
}
ENTRY = "/work/sccache/3/9/397831d19d8766101c1c1fb89e49ef8642f5761d04fe78457c028a9d114c1054"
IMAGE_ID = "sha256:" + "0" * 64
KEY = keys.CompileCacheKey("acme", "app", X86, "dev", IMAGE_ID)


def _stats(hits, misses):
    return ("stdout", "crossfarm-compile-cache: " + json.dumps({"stats": {
        "cache_hits": {"counts": {"Rust": hits}}, "cache_misses": {"counts": {"Rust": misses}}}}))


def _build(*marker, files=None, symlinks=None, exit_code=0):
    artifact = ("stdout", json.dumps({
        "reason": "compiler-artifact", "package_id": "path+file:///work/src#app@0.1.0",
        "target": {"name": "app", "kind": ["bin"]}, "fresh": False, "filenames": [BINARY],
        "executable": BINARY}))
    return Replay(lines=[artifact, *marker], exit_code=exit_code,
                  files={BINARY: b"\x7fELF app", **(files or {})}, symlinks=symlinks or {})


def _tools(tmp_path, docker, storage, **settings):
    options = {"worker_name": "w1", "scratch_dir": tmp_path / "scratch", "job_disk_bytes": 0,
               "compile_cache_bytes": 64 * 1024**2, **settings}
    return Toolbox(settings=WorkerSettings(**options), host=Arch.AMD64, docker=docker,
                   storage=storage, reporter=FakeReporter(), crates=FakeCrates())


def _job(source, attempt=1, tenant="acme", env=None):
    return JobMessage(job_id=JOB, build_id=BUILD, target=X86, attempt=attempt, source=source,
                      cargo=CargoSpec(), timeout_s=600, tenant=tenant, env=env or {})


def _log(tools, attempt=1):
    return tools.storage.objects[keys.log_key(BuildId(BUILD), X86, attempt)].decode()


def _cache_put(container):
    """Where the compile cache's members went and what they are (the build step copies
    them in one tar with the source)."""
    found = []
    for where, data in container.puts:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = {m.name: m for m in tar.getmembers()
                       if m.name.split("/")[0] == "sccache"}
        if members:
            found.append((where, members))
    [(where, members)] = found
    return where, members


def test_the_first_build_runs_sccache_around_cargo_and_stores_what_it_compiled(tmp_path):
    storage = FakeStorage()
    docker = FakeDocker([_build(_stats(0, 3), files={ENTRY: b"rlib"})])
    tools = _tools(tmp_path, docker, storage)

    assert run_job(tools, _job(storage.store_tree(CRATE)), QUEUE) is BuildState.SUCCEEDED

    [build] = docker.containers
    assert build.step.command[:2] == ["sh", "-c"]
    assert build.step.command[4:6] == ["cargo", "build"]
    assert build.step.env["SCCACHE_DIR"] == "/work/sccache"
    assert build.step.env["SCCACHE_CACHE_SIZE"] == str(64 * 1024**2 * 9 // 10)
    assert not build.step.binds
    assert set(build.step.volumes) == {f"crossfarm-{JOB}-a1"}
    where, members = _cache_put(build)
    assert where == "/work"
    assert list(members) == ["sccache"]  # an empty dir, the build user's
    log = _log(tools)
    assert "crossfarm: compile cache: none stored yet: starting empty" in log
    assert "crossfarm: compile cache: 0/3 hits (0%)" in log
    assert "crossfarm: compile cache: stored 1 file(s), 4 bytes" in log
    assert "crossfarm-compile-cache:" not in log  # the marker line is not the log's
    assert {KEY.archive(), KEY.manifest()} <= set(storage.objects)
    [(_, outcome)] = tools.reporter.outcomes
    assert outcome.reuse == CargoReuse(target_dir="cold", units=1, fresh=0,
                                       compile_cache=CompileCacheUse(hits=0, misses=3))


def test_the_next_build_of_the_project_starts_with_the_stored_cache(tmp_path):
    storage = FakeStorage()
    docker = FakeDocker([_build(_stats(0, 1), files={ENTRY: b"rlib"}),
                         _build(_stats(1, 0), files={ENTRY: b"rlib"})])
    tools = _tools(tmp_path, docker, storage)
    source = storage.store_tree(CRATE)

    assert run_job(tools, _job(source), QUEUE) is BuildState.SUCCEEDED
    assert run_job(tools, _job(source, attempt=2), QUEUE) is BuildState.SUCCEEDED

    _, members = _cache_put(docker.containers[1])
    assert members[ENTRY.removeprefix("/work/")].size == 4
    log = _log(tools, 2)
    assert "crossfarm: compile cache: 1 file(s), 4 bytes from the farm's store" in log
    assert "crossfarm: compile cache: 1/1 hits (100%)" in log
    assert "crossfarm: compile cache: unchanged (1 file(s)): not stored again" in log


def test_a_build_that_plants_a_symlink_in_its_cache_is_not_stored_and_still_succeeds(
        tmp_path):
    storage = FakeStorage()
    planted = _build(_stats(0, 1), files={ENTRY: b"rlib"},
                     symlinks={"/work/sccache/planted": "/etc/shadow"})
    tools = _tools(tmp_path, FakeDocker([planted]), storage)

    assert run_job(tools, _job(storage.store_tree(CRATE)), QUEUE) is BuildState.SUCCEEDED

    assert ('crossfarm: compile cache: not stored: "sccache/planted" is a symlink: only '
            "regular files are taken") in _log(tools)
    assert not [key for key in storage.objects if key.startswith("compile-cache/")]


def test_a_failed_build_stores_no_cache(tmp_path):
    storage = FakeStorage()
    failing = _build(_stats(0, 1), files={ENTRY: b"rlib"}, exit_code=101)
    tools = _tools(tmp_path, FakeDocker([failing]), storage)

    assert run_job(tools, _job(storage.store_tree(CRATE)), QUEUE) is BuildState.FAILED

    assert not [key for key in storage.objects if key.startswith("compile-cache/")]
    [(_, outcome)] = tools.reporter.outcomes
    assert outcome.reuse is not None
    assert outcome.reuse.compile_cache == CompileCacheUse(hits=0, misses=1)


def test_an_image_without_sccache_builds_without_it_and_says_so(tmp_path):
    storage = FakeStorage()
    missing = _build(("stdout", "crossfarm-compile-cache: missing"))
    tools = _tools(tmp_path, FakeDocker([missing]), storage,
                   builder_image="crossfarm/builder-1.63:1")

    assert run_job(tools, _job(storage.store_tree(CRATE)), QUEUE) is BuildState.SUCCEEDED

    assert ("crossfarm: compile cache: off: the builder image crossfarm/builder-1.63:1 has "
            "no sccache; built without it") in _log(tools)
    [(_, outcome)] = tools.reporter.outcomes
    assert outcome.reuse is not None
    assert outcome.reuse.compile_cache is None
    assert not [key for key in storage.objects if key.startswith("compile-cache/")]


def test_the_cache_is_off_without_a_tenant_or_with_the_builds_own_wrapper(tmp_path):
    cases = [({"tenant": None}, "the controller named no tenant for this job"),
             ({"env": {"RUSTC_WRAPPER": "/bin/mywrapper"}},
              "the build sets its own RUSTC_WRAPPER")]
    for attempt, (options, why) in enumerate(cases, start=1):
        storage, docker = FakeStorage(), FakeDocker([_build()])
        tools = _tools(tmp_path / str(attempt), docker, storage)
        job = _job(storage.store_tree(CRATE), **options)
        assert run_job(tools, job, QUEUE) is BuildState.SUCCEEDED
        [build] = docker.containers
        assert build.step.command[0] == "cargo"
        assert "SCCACHE_DIR" not in build.step.env
        assert f"crossfarm: compile cache: off: {why}" in _log(tools)


def test_with_the_setting_off_nothing_changes_and_nothing_is_said(tmp_path):
    storage, docker = FakeStorage(), FakeDocker([_build()])
    tools = _tools(tmp_path, docker, storage, compile_cache_bytes=0)

    assert run_job(tools, _job(storage.store_tree(CRATE)), QUEUE) is BuildState.SUCCEEDED

    [build] = docker.containers
    assert build.step.command[0] == "cargo"
    assert "compile cache" not in _log(tools)
