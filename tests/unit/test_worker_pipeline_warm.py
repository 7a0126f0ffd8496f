"""run_job with warm target dirs, on the fakes: a project's next build on this worker gets
its target dir back with the unchanged files' mtimes; anything else builds cold."""

import io
import json
import tarfile

from fakes import FakeCrates, FakeDocker, FakeReporter, FakeStorage, Replay

from crossfarm.shared import keys
from crossfarm.shared.arch import Arch
from crossfarm.shared.ids import BuildId
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import CargoReuse, CargoSpec, JobMessage
from crossfarm.worker.app import consumed_queues
from crossfarm.worker.heartbeat import describe
from crossfarm.worker.images import BUILD_UID
from crossfarm.worker.pipeline import Toolbox, run_job
from crossfarm.worker.settings import WorkerSettings
from crossfarm.worker.warm import WarmKey, WarmShelf

X86 = "x86_64-unknown-linux-gnu"
BUILD = "b-0123456789abcdef"
JOB = "j-0123456789abcdef"
QUEUE = "crossfarm.builds.amd64"
BINARY = f"/work/warm/target/{X86}/debug/app"
WORKSPACE = {
    "Cargo.toml": b'[workspace]\nmembers = ["app", "greet"]\n',
    "Cargo.lock": b'version = 3\n\n[[package]]\nname = "app"\nversion = "0.1.0"\n'
                  b'dependencies = ["greet"]\n\n[[package]]\nname = "greet"\nversion = "0.1.0"\n',
    "app/Cargo.toml": b'[package]\nname = "app"\nversion = "0.1.0"\n',
    "app/src/main.rs": b'fn main() { println!("{} 1", greet::hello()); }\n',
    "greet/Cargo.toml": b'[package]\nname = "greet"\nversion = "0.1.0"\n',
    "greet/src/lib.rs": b'pub fn hello() -> &\'static str { "hello" }\n',
}
WARM_DIR = WarmKey("acme", "app,greet", X86, "dev").name("w1")


def _artifact(name, kind, fresh, executable=None):
    return ("stdout", json.dumps({
        "reason": "compiler-artifact", "package_id": f"path+file:///work/src/{name}#0.1.0",
        "target": {"name": name, "kind": [kind]}, "fresh": fresh, "filenames": [],
        "executable": executable}))


def _build(fresh_greet):
    return Replay(lines=[_artifact("greet", "lib", fresh_greet),
                         _artifact("app", "bin", False, BINARY)],
                  files={BINARY: b"\x7fELF app"})


def _tools(tmp_path, docker, storage, **settings):
    options = {"worker_name": "w1", "scratch_dir": tmp_path / "scratch",
               "warm_bytes": 10**9, "job_disk_bytes": 0, **settings}
    return Toolbox(settings=WorkerSettings(**options), host=Arch.AMD64, docker=docker,
                   storage=storage, reporter=FakeReporter(), crates=FakeCrates())


def _job(source, attempt=1, tenant="acme"):
    return JobMessage(job_id=JOB, build_id=BUILD, target=X86, attempt=attempt, source=source,
                      cargo=CargoSpec(), timeout_s=600, tenant=tenant)


def _source_mtimes(container):
    [(_, source_tar)] = [put for put in container.puts if b"src/Cargo.toml" in put[1]]
    with tarfile.open(fileobj=io.BytesIO(source_tar)) as tar:
        return {m.name.removeprefix("src/"): m.mtime for m in tar if m.isfile()}


def _log(tools, attempt):
    return tools.storage.objects[keys.log_key(BuildId(BUILD), X86, attempt)].decode()


def test_the_next_build_of_a_project_reuses_its_target_dir_and_only_changed_files_are_new(
    tmp_path
):
    storage = FakeStorage()
    first = storage.store_tree(WORKSPACE)
    changed = b'fn main() { println!("{} 2", greet::hello()); }\n'
    second = storage.store_tree({**WORKSPACE, "app/src/main.rs": changed})
    docker = FakeDocker([_build(fresh_greet=False), _build(fresh_greet=True)])
    tools = _tools(tmp_path, docker, storage)

    assert run_job(tools, _job(first), QUEUE) is BuildState.SUCCEEDED
    assert run_job(tools, _job(second, attempt=2), QUEUE) is BuildState.SUCCEEDED

    one, two = docker.containers
    for build in (one, two):
        assert build.step.volumes[WARM_DIR] == "/work/warm"
        assert build.step.env["CARGO_TARGET_DIR"] == "/work/warm/target"
        [(path, joined)] = build.puts
        with tarfile.open(fileobj=io.BytesIO(joined)) as members:
            target = members.getmember("warm/target")
        assert (path, target.isdir(), target.uid) == ("/work", True, BUILD_UID)
    before, after = _source_mtimes(one), _source_mtimes(two)
    assert after["greet/src/lib.rs"] == before["greet/src/lib.rs"]
    assert after["app/src/main.rs"] > before["app/src/main.rs"]
    assert "crossfarm: warm target dir (its first build here): 0 unit(s) fresh, 2 rebuilt" in (
        _log(tools, 1))
    assert "crossfarm: warm target dir: 1 unit(s) fresh, 1 rebuilt: app (bin)" in _log(tools, 2)
    # the dir outlives its jobs; each job's own volume does not
    assert WARM_DIR in docker.kept
    assert WARM_DIR not in docker.removed
    assert keys.labelled_task(docker.kept[WARM_DIR]) is None  # the reaper passes it by
    assert f"crossfarm-{JOB}-a2" in docker.removed


def test_a_warm_builds_artifacts_are_read_from_the_warm_volume_where_the_worker_reaches_it(
        tmp_path):
    storage = FakeStorage()
    source = storage.store_tree(WORKSPACE)
    docker = FakeDocker([_build(fresh_greet=False)])
    volume = tmp_path / "warm-volume"
    (volume / "target" / X86 / "debug").mkdir(parents=True)
    (volume / "target" / X86 / "debug" / "app").write_bytes(b"\x7fELF app, from the volume")
    (volume / "target" / X86 / "debug" / "app").chmod(0o755)
    docker.volume_dirs[WARM_DIR] = volume
    tools = _tools(tmp_path, docker, storage)

    assert run_job(tools, _job(source), QUEUE) is BuildState.SUCCEEDED

    [(_, outcome)] = tools.reporter.outcomes
    [entry] = outcome.manifest.artifacts
    assert storage.objects[entry.key] == b"\x7fELF app, from the volume"
    assert entry.executable
    assert docker.calls.count("copy_from_volume") == 1


def test_each_outcome_report_says_warm_or_cold_and_how_many_units_were_fresh(tmp_path):
    storage = FakeStorage()
    first = storage.store_tree(WORKSPACE)
    second = storage.store_tree({**WORKSPACE, "app/src/main.rs": b"fn main() {}\n"})
    docker = FakeDocker([_build(fresh_greet=False), _build(fresh_greet=True)])
    tools = _tools(tmp_path, docker, storage)

    assert run_job(tools, _job(first), QUEUE) is BuildState.SUCCEEDED
    assert run_job(tools, _job(second, attempt=2), QUEUE) is BuildState.SUCCEEDED

    (_, new), (_, again) = tools.reporter.outcomes
    assert new.reuse == CargoReuse(target_dir="warm", units=2, fresh=0)
    assert again.reuse == CargoReuse(target_dir="warm", units=2, fresh=1)


def test_a_cold_build_whose_cargo_failed_still_reports_its_target_dir(tmp_path):
    storage = FakeStorage()
    failing = Replay(lines=[_artifact("greet", "lib", False)], exit_code=101)
    tools = _tools(tmp_path, FakeDocker([failing]), storage, warm_bytes=0)

    assert run_job(tools, _job(storage.store_tree(WORKSPACE)), QUEUE) is BuildState.FAILED

    [(_, outcome)] = tools.reporter.outcomes
    assert outcome.reuse == CargoReuse(target_dir="cold", units=1, fresh=0)


def test_a_job_that_ends_before_cargo_runs_reports_no_reuse(tmp_path):
    storage = FakeStorage()
    tools = _tools(tmp_path, FakeDocker([]), storage)
    job = _job("f" * 64)  # no such tree in the store: the source step fails

    assert run_job(tools, job, QUEUE) is BuildState.FAILED

    [(_, outcome)] = tools.reporter.outcomes
    assert outcome.reuse is None


def test_a_build_whose_project_dir_another_build_holds_builds_cold(tmp_path):
    storage = FakeStorage()
    docker = FakeDocker([Replay()])
    tools = _tools(tmp_path, docker, storage)

    with WarmShelf(tmp_path / "scratch" / "warm").borrow(WARM_DIR) as held:
        assert held is not None
        assert run_job(tools, _job(storage.store_tree(WORKSPACE)), QUEUE) is BuildState.SUCCEEDED

    [build] = docker.containers
    assert build.step.env["CARGO_TARGET_DIR"] == "/work/target"
    assert WARM_DIR not in build.step.volumes
    assert "cold target dir: another build of app,greet holds its warm dir" in _log(tools, 1)


def test_builds_are_cold_without_a_tenant_with_warm_dirs_off_or_with_a_job_disk(tmp_path):
    cases = [({}, None, "the controller named no tenant"),
             ({"warm_bytes": 0}, "acme", "warm target dirs are off on this worker"),
             ({"job_disk_bytes": 64 * 1024**2}, "acme",
              "warm target dirs need CROSSFARM_JOB_DISK_BYTES=0")]
    for attempt, (settings, tenant, why) in enumerate(cases, start=1):
        storage, docker = FakeStorage(), FakeDocker([Replay()])
        tools = _tools(tmp_path / str(attempt), docker, storage, **settings)
        job = _job(storage.store_tree(WORKSPACE), tenant=tenant)
        assert run_job(tools, job, QUEUE) is BuildState.SUCCEEDED
        [build] = docker.containers
        assert build.step.env["CARGO_TARGET_DIR"] == "/work/target"
        assert set(docker.kept) == {tools.settings.deps_volume}  # and no warm dir
        assert f"crossfarm: cold target dir: {why}" in _log(tools, 1)


def test_a_worker_over_its_warm_budget_drops_the_least_recently_used_dir(tmp_path):
    storage = FakeStorage()
    docker = FakeDocker([_build(fresh_greet=False)])
    docker.kept_bytes[WARM_DIR] = 5000
    tools = _tools(tmp_path, docker, storage, warm_bytes=4000)

    assert run_job(tools, _job(storage.store_tree(WORKSPACE)), QUEUE) is BuildState.SUCCEEDED

    assert WARM_DIR in docker.removed
    assert WARM_DIR not in docker.kept
    assert WarmShelf(tmp_path / "scratch" / "warm").dirs() == []
    assert ("1 warm target dir(s) dropped to keep this worker under "
            "CROSSFARM_WARM_BYTES=4000") in _log(tools, 1)


def test_a_job_sent_to_this_workers_own_queue_is_a_job_of_the_queue_beside_it(tmp_path):
    storage = FakeStorage()
    docker = FakeDocker([Replay()])
    tools = _tools(tmp_path, docker, storage)
    job = _job(storage.store_tree(WORKSPACE)).model_copy(update={"project": "named-by-the-cli"})

    assert run_job(tools, job, f"{QUEUE}@w1") is BuildState.SUCCEEDED

    [(_, start)] = tools.reporter.starts
    assert start.consumed_from == QUEUE
    [build] = docker.containers
    named = WarmKey("acme", "named-by-the-cli", X86, "dev")
    assert build.step.volumes[named.name("w1")] == "/work/warm"


def test_the_heartbeat_names_the_warm_dirs_kept_by_their_affinity_keys_only(tmp_path):
    storage = FakeStorage()
    tools = _tools(tmp_path, FakeDocker([Replay()]), storage)
    assert run_job(tools, _job(storage.store_tree(WORKSPACE)), QUEUE) is BuildState.SUCCEEDED

    info = describe(tools.settings, Arch.AMD64, None)

    assert info.warm == [keys.affinity_key("acme", "app,greet", X86, "dev")]
    assert "app" not in info.model_dump_json()
    assert f"{QUEUE}@w1" in consumed_queues(tools.settings, Arch.AMD64, fetches=False)
    cold = tools.settings.model_copy(update={"warm_bytes": 0})
    assert describe(cold, Arch.AMD64, None).warm == []
    assert consumed_queues(cold, Arch.AMD64, fetches=False) == [QUEUE]
