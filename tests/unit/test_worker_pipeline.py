"""run_job end to end on the fakes: refusals are reported and failed before any
container or download happens; failures of every kind end the job as data."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from fakes import FAKE_LEASE, FakeCrates, FakeDocker, FakeReporter, FakeStorage, Replay

from crossfarm.shared import keys
from crossfarm.shared.arch import Arch, BuildMode
from crossfarm.shared.errors import BuildCancelled
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.states import BuildState
from crossfarm.shared.storage import PendingUpload
from crossfarm.shared.tree import tree_digest
from crossfarm.shared.wire import (
    CargoSpec,
    JobMessage,
    Manifest,
    SourceLimits,
    SourceTree,
    TreeEntry,
)
from crossfarm.worker.artifacts import JobOutput, remember_held
from crossfarm.worker.lease import Lease
from crossfarm.worker.pipeline import Toolbox, _publish, run_job
from crossfarm.worker.settings import WorkerSettings

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
BUILD = "b-0123456789abcdef"
JOB = "j-0123456789abcdef"


def _job(target):
    return JobMessage(job_id=JOB, build_id=BUILD, target=target, attempt=1, source="ab" * 32,
                      cargo=CargoSpec(), timeout_s=600)


def _output(target):
    return JobOutput(build_id=BuildId(BUILD), job_id=JobId(JOB), target=target, attempt=1,
                     profile="dev")


def _tools(tmp_path, reporter):
    # an amd64 worker with an arm64 cross toolchain
    settings = WorkerSettings(worker_name="w1", cross_arches=[Arch.ARM64],
                              scratch_dir=tmp_path / "scratch")
    return Toolbox(settings=settings, host=Arch.AMD64, docker=FakeDocker(),
                   storage=FakeStorage(), reporter=reporter, crates=FakeCrates())


@pytest.mark.parametrize(
    ("target", "queue", "mode", "reason"),
    [
        (ARM, "crossfarm.builds.arm64", BuildMode.NATIVE,
         "this worker does not serve crossfarm.builds.arm64"),
        (ARM, "crossfarm.builds.arm64.emulated", BuildMode.EMULATED,
         "this worker does not serve crossfarm.builds.arm64.emulated"),
        (X86, "crossfarm.builds.arm64.cross", BuildMode.CROSS,
         f"{X86} does not belong on crossfarm.builds.arm64.cross"),
    ],
)
def test_a_job_this_worker_must_not_build_is_reported_and_failed_with_the_reason(
    tmp_path, target, queue, mode, reason
):
    reporter = FakeReporter()
    tools = _tools(tmp_path, reporter)

    assert run_job(tools, _job(target), consumed_from=queue) is BuildState.FAILED

    [(_, start)] = reporter.starts
    assert (start.mode, start.consumed_from, start.worker) == (mode, queue, "w1")
    [(_, outcome)] = reporter.outcomes
    assert outcome.state is BuildState.FAILED
    assert outcome.reason.startswith(reason)
    assert any(line.startswith(f"crossfarm: failed: {reason}") for line in reporter.lines)
    log = tools.storage.objects[keys.log_key(BuildId(BUILD), target, 1)].decode()
    assert reason in log
    assert tools.docker.calls == []  # a refused job never reaches a container


# worker/tasks.py passes consumed_from="unknown" when Celery's delivery info has no
# routing key; job_mode refuses it as a BuildError, which run_job must report like any
# other refusal rather than crash.
@pytest.mark.parametrize("queue", ["unknown", "celery"])
def test_a_job_from_a_queue_that_is_not_crossfarms_is_failed_not_crashed(tmp_path, queue):
    reporter = FakeReporter()

    assert run_job(_tools(tmp_path, reporter), _job(X86), consumed_from=queue) is (
        BuildState.FAILED)

    [(_, outcome)] = reporter.outcomes
    assert "unknown queue" in outcome.reason


def test_a_job_the_controller_says_not_to_run_is_dropped_without_an_outcome(tmp_path):
    reporter = FakeReporter(proceed=False)
    tools = _tools(tmp_path, reporter)

    assert run_job(tools, _job(ARM), consumed_from="crossfarm.builds.arm64") is None

    assert reporter.outcomes == []
    assert tools.storage.objects == {}


def test_an_unexpected_failure_ends_the_job_as_failed_with_the_reason(tmp_path):
    reporter = FakeReporter()
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch")
    docker = FakeDocker(broken=RuntimeError("engine socket vanished"))
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=docker,
                    storage=FakeStorage(), reporter=reporter, crates=FakeCrates())

    state = run_job(tools, _job(X86), consumed_from=keys.QueueKey(Arch.AMD64).name)

    assert state is BuildState.FAILED
    [(_, outcome)] = reporter.outcomes
    assert outcome.reason == "worker error: RuntimeError: engine socket vanished"


def test_publishing_aborts_this_attempts_unfinished_uploads_first_and_no_others(tmp_path):
    mine = keys.artifact_key(BuildId(BUILD), X86, 1, "hello")
    # unfinished multipart uploads, as a store holds them after an upload was cut off
    storage = FakeStorage(pending=[
        PendingUpload(mine, "u1"),
        PendingUpload(keys.artifact_key(BuildId(BUILD), X86, 2, "hello"), "u2"),
        PendingUpload(keys.artifact_key(BuildId(BUILD), ARM, 1, "hello"), "u3"),
    ])
    binary = tmp_path / "hello"
    binary.write_bytes(b"\x7fELF")

    manifest = _publish(storage, _output(X86), [binary], lambda: None)

    assert storage.aborted == [mine]
    assert storage.objects[mine] == b"\x7fELF"
    assert [a.name for a in manifest.artifacts] == ["hello"]
    assert list(storage.objects)[-1] == keys.manifest_key(BuildId(BUILD), X86, 1)


def test_a_file_the_tenant_already_stores_is_not_uploaded_again(tmp_path):
    binary = tmp_path / "hello"
    binary.write_bytes(b"\x7fELF")
    first = FakeStorage()
    earlier = _publish(first, _output(X86), [binary], lambda: None, tenant="acme")
    remember_held(first, "acme", earlier)
    stored = dict(first.objects)
    later = JobOutput(build_id=BuildId("b-fedcba9876543210"), job_id=JobId(JOB),
                      target=X86, attempt=1, profile="dev")

    manifest = _publish(first, later, [binary], lambda: None, tenant="acme")

    # only the later manifest was written; its entry names the earlier object
    assert set(first.objects) - set(stored) == {keys.manifest_key(later.build_id, X86, 1)}
    assert manifest.artifacts[0].key == earlier.artifacts[0].key
    # another tenant's build uploads its own copy
    other = _publish(first, later, [binary], lambda: None, tenant="globex")
    assert other.artifacts[0].key == keys.artifact_key(later.build_id, X86, 1, "hello")
    assert first.objects[other.artifacts[0].key] == b"\x7fELF"


@pytest.mark.parametrize("reason", ["cancelled by request", "superseded by attempt 2"])
def test_a_job_stopped_while_its_artifacts_upload_publishes_no_manifest(tmp_path, reason):
    storage = FakeStorage()
    binary = tmp_path / "hello"
    binary.write_bytes(b"\x7fELF")

    with pytest.raises(BuildCancelled, match=reason):
        _publish(storage, _output(X86), [binary], lambda: reason)

    assert keys.manifest_key(BuildId(BUILD), X86, 1) not in storage.objects


def test_a_worker_cut_off_past_its_lease_abandons_the_job_and_reports_no_outcome(tmp_path):
    reporter = FakeReporter()
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch")
    storage = FakeStorage(reads_fail=True)
    now = [1000.0]
    lease = Lease(tmp_path / "lease.json", clock=lambda: now[0])
    lease.renewed(lost_after_s=30)
    now[0] += 61
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=FakeDocker(),
                    storage=storage, reporter=reporter, lease=lease,
                    crates=FakeCrates())

    assert run_job(tools, _job(X86), consumed_from=keys.QueueKey(Arch.AMD64).name) is None

    assert len(reporter.starts) == 1
    assert reporter.outcomes == []  # the controller re-runs it; no verdict from here
    log = storage.objects[keys.log_key(BuildId(BUILD), X86, 1)].decode()
    assert "crossfarm: abandoned: cut off from the controller for 61 s" in log


@pytest.mark.parametrize(("limits", "refused"), [
    (SourceLimits(max_files=2, max_file_bytes=100, max_total_bytes=1000), True),
    (SourceLimits(max_files=3, max_file_bytes=100, max_total_bytes=1000), False),
    (None, False),  # an older controller's job: the default limits
])
def test_the_worker_checks_the_tree_against_the_limits_the_job_carries(tmp_path, limits,
                                                                        refused):
    tree = SourceTree(entries=[TreeEntry(path=f"f{n}", kind="file", sha256=f"{n}" * 64, size=1)
                               for n in range(3)])
    reporter = FakeReporter()
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch",
                              storage_retry_s=0)
    storage = FakeStorage({keys.tree_key(tree_digest(tree)): tree.model_dump_json().encode()})
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=FakeDocker(),
                    storage=storage, reporter=reporter, crates=FakeCrates())
    job = _job(X86).model_copy(update={"source": tree_digest(tree), "limits": limits})

    assert run_job(tools, job, consumed_from=keys.QueueKey(Arch.AMD64).name) is BuildState.FAILED

    [(_, outcome)] = reporter.outcomes  # failed either way: the blobs are missing
    assert ("3 files; the limit is 2" in outcome.reason) is refused, outcome.reason


RECORDED = Path(__file__).parent / "data" / "hello-c"
#: the binary the recorded build.stdout names as its executable
RECORDED_BINARY = "/work/target/x86_64-unknown-linux-gnu/debug/hello-c"


def _recorded(name, stream):
    return [(stream, line) for line in (RECORDED / name).read_text().splitlines()]


def _stored_crate(storage, root, replace=None):
    """Store a crate as the controller does; returns its digest. `replace`: file contents
    to use instead of the files' own, by relative path."""
    files = {path.relative_to(root).as_posix(): path.read_bytes()
             for path in root.rglob("*") if path.is_file()}
    return storage.store_tree({**files, **(replace or {})})


def _crate_file(name, version):
    """A small .crate: a gzip'd tar of `<name>-<version>/`, as crates.io serves them."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for path, text in (("Cargo.toml", f'[package]\nname = "{name}"\n'),
                           ("src/lib.rs", "pub fn f() {}\n")):
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-{version}/{path}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _registry_and_lock():
    """A registry holding hello-c's two crates (stand-ins), and the Cargo.lock pinning them."""
    crates = {"cc-1.11.3": _crate_file("cc", "1.11.3"),
              "itoa-1.0.19": _crate_file("itoa", "1.0.19")}
    lock = 'version = 4\n\n[[package]]\nname = "hello-c"\nversion = "0.1.0"\n'
    for dirname, data in crates.items():
        name, version = dirname.rsplit("-", 1)
        lock += (f'\n[[package]]\nname = "{name}"\nversion = "{version}"\n'
                 f'source = "registry+https://github.com/rust-lang/crates.io-index"\n'
                 f'checksum = "{hashlib.sha256(data).hexdigest()}"\n')
    return FakeCrates(crates), lock.encode()


def test_a_job_that_builds_publishes_its_binary_then_the_manifest_then_the_log(tmp_path):
    reporter, storage = FakeReporter(), FakeStorage()
    registry, lock = _registry_and_lock()
    source = _stored_crate(storage, Path(__file__).parents[1] / "fixtures" / "hello-c",
                           replace={"Cargo.lock": lock})
    stored_before = list(storage.objects)
    docker = FakeDocker([
        Replay(lines=_recorded("build.stdout", "stdout") + _recorded("build.stderr", "stderr"),
               files={RECORDED_BINARY: b"\x7fELF hello-c"}),
    ])
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch")
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=docker, storage=storage,
                    reporter=reporter, crates=registry)
    job = _job(X86).model_copy(update={"source": source})

    assert run_job(tools, job, consumed_from="crossfarm.builds.amd64") is BuildState.SUCCEEDED

    # reported started, as a native build
    [(_, start)] = reporter.starts
    assert (start.mode, start.worker) == (BuildMode.NATIVE, "w1")
    # the worker fetched the locked crates itself into the deps volume, unpacked under
    # their sha256, complete with cargo's checksum file
    assert sorted(registry.downloaded) == ["cc-1.11.3", "itoa-1.0.19"]
    shelf = docker.shelves[settings.deps_volume]
    itoa = hashlib.sha256(registry.crates["itoa-1.0.19"]).hexdigest()
    assert {f"{itoa}/Cargo.toml", f"{itoa}/src/lib.rs", f"{itoa}/.cargo-checksum.json"} <= set(
        shelf.files)
    # in one write through the engine, the entries' markers after every entry
    assert shelf.puts == 1
    assert set(list(shelf.files)[-2:]) == {
        f".present/{hashlib.sha256(data).hexdigest()}" for data in registry.crates.values()}
    # one step only, with no network: the source and the vendor links go into its volume,
    # the deps volume is mounted read-only
    [build] = docker.containers
    assert build.step.command[:2] == ["cargo", "build"]
    assert "--locked" in build.step.command
    assert not build.step.network
    assert build.step.readonly_volumes == {settings.deps_volume: "/deps"}
    assert build.step.env["CARGO_HOME"] == "/work/cargo-home"
    # the image's linker for its own arch would override the crate's configured one
    assert build.step.unset_env == ("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",)
    # one copy into the container: the source and the vendor links in one archive
    [(path, joined)] = build.puts
    assert path == "/work"
    with tarfile.open(fileobj=io.BytesIO(joined)) as members:
        assert {"src/Cargo.toml", "src/src/main.rs"} <= set(members.getnames())
        link = members.getmember("vendor/itoa-1.0.19")
        config = members.extractfile("cargo-home/config.toml").read().decode()
    assert (link.issym(), link.linkname) == (True, f"/deps/{itoa}")
    assert 'directory = "/work/vendor"' in config
    assert build.ran
    # the artifact cargo named, then the manifest (which publishes), then the log
    artifact = keys.artifact_key(BuildId(BUILD), X86, 1, "hello-c")
    manifest_key = keys.manifest_key(BuildId(BUILD), X86, 1)
    log_key = keys.log_key(BuildId(BUILD), X86, 1)
    assert list(storage.objects)[len(stored_before):] == [artifact, manifest_key, log_key]
    assert storage.objects[artifact] == b"\x7fELF hello-c"
    manifest = Manifest.model_validate_json(storage.objects[manifest_key])
    [entry] = manifest.artifacts
    assert (entry.name, entry.sha256, entry.executable, manifest.profile_dir) == (
        "hello-c", hashlib.sha256(b"\x7fELF hello-c").hexdigest(), True, "debug")
    # naming the builder image that made it, for the controller's result cache
    assert manifest.image_id == docker.image_id(settings.builder_image)
    # cargo's human lines reach the log; its JSON messages do not
    log = storage.objects[log_key].decode()
    assert "2 crate(s) from the verified dependency volume, 2 downloaded now" in log
    assert "Compiling hello-c v0.1.0" in log
    assert '"reason":"compiler-artifact"' not in log
    assert reporter.lines == log.splitlines()
    # finished last, with the manifest it published and the lease its start was given,
    # which went nowhere else: not to the container, the live log or the stored objects
    [(_, outcome)] = reporter.outcomes
    assert (outcome.state, outcome.exit_code, outcome.manifest, outcome.lease) == (
        BuildState.SUCCEEDED, 0, manifest, FAKE_LEASE)
    assert FAKE_LEASE not in repr(build.step)
    assert not any(FAKE_LEASE.encode() in data for _, data in build.puts)
    assert not any(FAKE_LEASE in line for line in reporter.lines)
    assert not any(FAKE_LEASE.encode() in data for data in storage.objects.values())
    # nothing is left behind on the engine
    assert f"crossfarm-{JOB}-a1" in docker.removed
    assert len(docker.removed) == 2


def test_a_succeeded_job_notes_its_upload_and_a_rebuild_with_the_same_binary_sends_none(
        tmp_path):
    reporter, storage = FakeReporter(), FakeStorage()
    registry, lock = _registry_and_lock()
    source = _stored_crate(storage, Path(__file__).parents[1] / "fixtures" / "hello-c",
                           replace={"Cargo.lock": lock})
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch")
    built = Replay(lines=_recorded("build.stdout", "stdout"),
                   files={RECORDED_BINARY: b"\x7fELF hello-c"})
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=FakeDocker([built, built]),
                    storage=storage, reporter=reporter, crates=registry)
    first = _job(X86).model_copy(update={"source": source, "tenant": "acme"})
    again = first.model_copy(update={"build_id": "b-fedcba9876543210",
                                     "job_id": "j-fedcba9876543210"})

    for job in (first, again):
        assert run_job(tools, job, consumed_from="crossfarm.builds.amd64") is (
            BuildState.SUCCEEDED)

    sha = hashlib.sha256(b"\x7fELF hello-c").hexdigest()
    artifact = keys.artifact_key(BuildId(BUILD), X86, 1, "hello-c")
    assert json.loads(storage.objects[keys.held_artifact_key("acme", sha)])["key"] == artifact
    # the rebuild's manifest names the first build's object, and it uploaded nothing
    [(_, _), (_, outcome)] = reporter.outcomes
    assert [entry.key for entry in outcome.manifest.artifacts] == [artifact]
    assert not [key for key in storage.objects if key.startswith("builds/b-fedcba9876543210/")
                and "/artifacts/" in key]
    log = storage.objects[keys.log_key(BuildId("b-fedcba9876543210"), X86, 1)].decode()
    assert ("crossfarm: artifacts: 0 uploaded (0 bytes), 1 already stored for this tenant, "
            "not sent again (12 bytes): hello-c") in log


def test_crates_already_in_the_deps_volume_are_not_downloaded_again(tmp_path):
    registry, lock = _registry_and_lock()
    storage = FakeStorage()
    source = _stored_crate(storage, Path(__file__).parents[1] / "fixtures" / "hello-c",
                           replace={"Cargo.lock": lock})
    docker = FakeDocker([Replay(), Replay()])
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch")
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=docker, storage=storage,
                    reporter=FakeReporter(), crates=registry)
    for attempt in (1, 2):
        job = _job(X86).model_copy(update={"source": source, "attempt": attempt})
        assert run_job(tools, job, consumed_from="crossfarm.builds.amd64") is (
            BuildState.SUCCEEDED)
    assert sorted(registry.downloaded) == ["cc-1.11.3", "itoa-1.0.19"]  # once each


def test_a_crate_with_no_lock_file_gets_one_made_without_its_cargo_config(tmp_path):
    registry, lock = _registry_and_lock()
    storage = FakeStorage()
    crate = tmp_path / "crate"
    crate.mkdir()
    (crate / "Cargo.toml").write_text('[package]\nname = "x"\nversion = "0.1.0"\n')
    (crate / ".cargo").mkdir()
    (crate / ".cargo" / "config.toml").write_text('[build]\nrustc = "./evil.sh"\n')
    source = _stored_crate(storage, crate)
    docker = FakeDocker([Replay(files={"/work/src/Cargo.lock": lock}), Replay()])
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch")
    reporter = FakeReporter()
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=docker, storage=storage,
                    reporter=reporter, crates=registry)
    job = _job(X86).model_copy(update={"source": source})

    assert run_job(tools, job, consumed_from="crossfarm.builds.amd64") is BuildState.SUCCEEDED

    resolve, build = docker.containers
    assert resolve.step.command == ["cargo", "generate-lockfile"]
    assert resolve.step.network
    assert (resolve.step.volumes, resolve.step.readonly_volumes) == ({}, {})
    [(_, tar)] = resolve.puts
    with tarfile.open(fileobj=io.BytesIO(tar)) as members:
        names = members.getnames()
    assert "src/Cargo.toml" in names
    assert not [n for n in names if ".cargo" in n.split("/")]
    # the build step has the crate's own config, and the lock file made for it
    assert not build.step.network
    assert "--locked" not in build.step.command
    [(_, joined)] = build.puts
    with tarfile.open(fileobj=io.BytesIO(joined)) as members:
        assert members.extractfile("src/Cargo.lock").read() == lock
    assert sorted(registry.downloaded) == ["cc-1.11.3", "itoa-1.0.19"]


@pytest.mark.parametrize("timings", [["--timings"], ["--timings=html"], []])
def test_cargos_timing_report_ships_beside_the_binary_when_the_build_asked_for_it(
        tmp_path, timings):
    reporter, storage = FakeReporter(), FakeStorage()
    registry, lock = _registry_and_lock()
    source = _stored_crate(storage, Path(__file__).parents[1] / "fixtures" / "hello-c",
                           replace={"Cargo.lock": lock})
    report = b"<html>cargo timings</html>"
    docker = FakeDocker([Replay(
        lines=_recorded("build.stdout", "stdout"),
        files={RECORDED_BINARY: b"\x7fELF hello-c",
               "/work/target/cargo-timings/cargo-timing.html": report})])
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch")
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=docker, storage=storage,
                    reporter=reporter, crates=registry)
    job = _job(X86).model_copy(update={"source": source,
                                       "cargo": CargoSpec(cargo_args=timings)})

    assert run_job(tools, job, consumed_from="crossfarm.builds.amd64") is BuildState.SUCCEEDED

    [build] = docker.containers
    assert all(arg in build.step.command for arg in timings)
    [(_, outcome)] = reporter.outcomes
    shipped = {entry.name: entry.sha256 for entry in outcome.manifest.artifacts}
    if timings:
        assert shipped["cargo-timing.html"] == hashlib.sha256(report).hexdigest()
        key = keys.artifact_key(BuildId(BUILD), X86, 1, "cargo-timing.html")
        assert storage.objects[key] == report
    else:  # a report left in a warm target dir by an earlier build stays there
        assert set(shipped) == {"hello-c"}


def test_a_build_that_asked_for_timings_and_failed_ships_nothing(tmp_path):
    reporter, storage = FakeReporter(), FakeStorage()
    registry, lock = _registry_and_lock()
    source = _stored_crate(storage, Path(__file__).parents[1] / "fixtures" / "hello-c",
                           replace={"Cargo.lock": lock})
    docker = FakeDocker([Replay(exit_code=101)])
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch")
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=docker, storage=storage,
                    reporter=reporter, crates=registry)
    job = _job(X86).model_copy(update={"source": source,
                                       "cargo": CargoSpec(cargo_args=["--timings"])})

    assert run_job(tools, job, consumed_from="crossfarm.builds.amd64") is BuildState.FAILED
    [(_, outcome)] = reporter.outcomes
    assert outcome.reason == "cargo build failed with exit code 101"


TESTED = Path(__file__).parents[1] / "fixtures" / "tested"
#: what libtest printed for the `tested` fixture (x86_64): its unit tests, then its
#: integration test
TEST_RUN = [
    ("stdout", "running 4 tests"),
    ("stdout", "test tests::is_ignored ... ignored"),
    ("stdout", "test tests::adds_small_numbers ... ok"),
    ("stdout", "test tests::fails_on_purpose ... FAILED"),
    ("stdout", "test result: FAILED. 2 passed; 1 failed; 1 ignored; 0 measured; "
               "0 filtered out; finished in 0.00s"),
    ("stdout", "running 1 test"),
    ("stdout", "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; "
               "finished in 0.00s"),
    ("stderr", "error: 1 target failed:"),
]


def _test_job(storage, target, **cargo):
    source = _stored_crate(storage, TESTED)
    return _job(target).model_copy(update={
        "source": source, "cargo": CargoSpec(command="test", **cargo)})


def test_a_test_job_with_a_failing_test_fails_reporting_the_summed_counts(tmp_path):
    reporter, storage = FakeReporter(), FakeStorage()
    docker = FakeDocker([Replay(lines=TEST_RUN, exit_code=101)])
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch")
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=docker, storage=storage,
                    reporter=reporter, crates=FakeCrates())
    job = _test_job(storage, X86)

    assert run_job(tools, job, consumed_from="crossfarm.builds.amd64") is BuildState.FAILED

    [run] = docker.containers
    assert run.step.command[:2] == ["cargo", "test"]
    assert "--no-fail-fast" in run.step.command
    assert "--no-run" not in run.step.command
    assert not run.step.network
    [(_, outcome)] = reporter.outcomes
    assert (outcome.exit_code, outcome.reason) == (101, "tests failed: 1 of 4 (see the log above)")
    counts = outcome.manifest.tests
    assert (counts.passed, counts.failed, counts.ignored, counts.suites, counts.ran) == (
        3, 1, 1, 2, True)
    assert outcome.manifest.artifacts == []
    # a failed job publishes no manifest, only its log
    assert keys.manifest_key(BuildId(BUILD), X86, 1) not in storage.objects
    log = storage.objects[keys.log_key(BuildId(BUILD), X86, 1)].decode()
    assert "test tests::fails_on_purpose ... FAILED" in log
    assert "crossfarm: tests: 3 passed, 1 failed, 1 ignored (2 test binaries)" in log


def test_a_test_job_whose_tests_pass_publishes_a_manifest_with_the_counts_and_no_binaries(
        tmp_path):
    reporter, storage = FakeReporter(), FakeStorage()
    passing = [line for line in TEST_RUN if "FAILED" not in line[1]]
    docker = FakeDocker([Replay(lines=passing)])
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch")
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=docker, storage=storage,
                    reporter=reporter, crates=FakeCrates())

    state = run_job(tools, _test_job(storage, X86), consumed_from="crossfarm.builds.amd64")

    assert state is BuildState.SUCCEEDED
    manifest = Manifest.model_validate_json(
        storage.objects[keys.manifest_key(BuildId(BUILD), X86, 1)])
    assert (manifest.tests.passed, manifest.tests.failed, manifest.artifacts) == (1, 0, [])


def _artifact_message(path, test):
    kind = "test" if path.endswith("api") else "lib"
    return json.dumps({"reason": "compiler-artifact", "target": {"name": "tested",
                       "kind": [kind]}, "profile": {"test": test}, "executable": path,
                       "filenames": [path], "fresh": False})


def test_no_run_returns_the_test_binaries_cargo_names_and_only_those(tmp_path):
    reporter, storage = FakeReporter(), FakeStorage()
    out = "/work/target/x86_64-unknown-linux-gnu/debug/deps"
    docker = FakeDocker([Replay(
        lines=[("stdout", _artifact_message(f"{out}/tested-0a1b", test=True)),
               ("stdout", _artifact_message(f"{out}/api-2c3d", test=True)),
               # a bin built for the integration tests is no test binary
               ("stdout", json.dumps({"reason": "compiler-artifact", "executable":
                                      f"{out}/../tool", "profile": {"test": False},
                                      "target": {"name": "tool", "kind": ["bin"]}}))],
        files={f"{out}/tested-0a1b": b"\x7fELF unit", f"{out}/api-2c3d": b"\x7fELF api"})])
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch")
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=docker, storage=storage,
                    reporter=reporter, crates=FakeCrates())

    state = run_job(tools, _test_job(storage, X86, no_run=True),
                    consumed_from="crossfarm.builds.amd64")

    assert state is BuildState.SUCCEEDED
    assert "--no-run" in docker.containers[0].step.command
    [(_, outcome)] = reporter.outcomes
    assert sorted(a.name for a in outcome.manifest.artifacts) == ["api-2c3d", "tested-0a1b"]
    assert outcome.manifest.tests.ran is False


def test_a_cross_compiled_test_job_builds_its_tests_and_says_why_they_do_not_run(tmp_path):
    reporter, storage = FakeReporter(), FakeStorage()
    docker = FakeDocker([Replay()])
    tools = _tools(tmp_path, reporter)
    tools = Toolbox(settings=tools.settings, host=Arch.AMD64, docker=docker, storage=storage,
                    reporter=reporter, crates=FakeCrates())

    state = run_job(tools, _test_job(storage, ARM), consumed_from="crossfarm.builds.arm64.cross")

    assert state is BuildState.SUCCEEDED
    assert "--no-run" in docker.containers[0].step.command
    assert docker.containers[0].step.unset_env == ()  # the cross toolchain's linker stays
    log = "\n".join(reporter.lines)
    assert (f"tests built, not run: cross-compiled on this amd64 worker, whose CPU cannot "
            f"run {ARM} code") in log
    [(_, outcome)] = reporter.outcomes
    assert outcome.manifest.tests.ran is False


def test_a_job_gets_the_image_of_the_toolchain_it_names_and_its_rustc_in_the_manifest(
        tmp_path):
    from crossfarm.worker.toolchains import Toolchains

    reporter, storage = FakeReporter(), FakeStorage()
    probe = "rustc 1.63.0\nbinary: rustc\nrelease: 1.63.0\n--- targets\nx86_64-unknown-linux-gnu"
    docker = FakeDocker([Replay(lines=[("stdout", line) for line in probe.splitlines()]),
                         Replay(lines=[line for line in TEST_RUN if "FAILED" not in line[1]])])
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch",
                              toolchains="1.96=crossfarm/builder:1,1.63=old/builder:1")
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=docker, storage=storage,
                    reporter=reporter, crates=FakeCrates(),
                    toolchains=Toolchains(settings, docker))

    state = run_job(tools, _test_job(storage, X86, toolchain="1.63"),
                    consumed_from="crossfarm.builds.amd64")

    assert state is BuildState.SUCCEEDED
    probe_run, test_run = docker.containers
    assert probe_run.step.image == test_run.step.image == "old/builder:1"
    assert not probe_run.step.network
    [(_, outcome)] = reporter.outcomes
    assert outcome.manifest.rustc.startswith("rustc 1.63.0\n")


def test_a_job_naming_a_toolchain_this_worker_lacks_fails_naming_the_ones_it_has(tmp_path):
    from crossfarm.worker.toolchains import Toolchains

    reporter, storage = FakeReporter(), FakeStorage()
    probe = "release: 1.96.0\n--- targets\nx86_64-unknown-linux-gnu"
    docker = FakeDocker([Replay(lines=[("stdout", line) for line in probe.splitlines()])])
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch")
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=docker, storage=storage,
                    reporter=reporter, crates=FakeCrates(), toolchains=Toolchains(settings, docker))

    state = run_job(tools, _test_job(storage, X86, toolchain="1.63"),
                    consumed_from="crossfarm.builds.amd64")

    assert state is BuildState.FAILED
    [(_, outcome)] = reporter.outcomes
    assert outcome.reason.startswith("this worker has no toolchain '1.63' (it has: 1.96)")
