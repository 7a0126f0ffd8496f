import hashlib
import json

import pytest
from fakes import FakeStorage

from crossfarm.shared import keys
from crossfarm.shared.errors import BuildError, LimitExceeded
from crossfarm.shared.ids import BuildId
from crossfarm.worker.artifacts import (
    ArtifactCollector,
    JobOutput,
    artifact_paths,
    build_manifest,
    held_lookup,
    profile_dir,
    remember_held,
    wants_timings,
)

OUT = "/work/target/x86_64-unknown-linux-gnu/debug"


def _artifact(kinds, filenames, executable=None, name="hello"):
    """A cargo `compiler-artifact` message as `cargo build --message-format=json` prints it."""
    return {
        "reason": "compiler-artifact",
        "package_id": f"path+file:///work/src#{name}@0.1.0",
        "manifest_path": "/work/src/Cargo.toml",
        "target": {
            "kind": kinds,
            "crate_types": kinds,
            "name": name,
            "src_path": "/work/src/src/main.rs",
            "edition": "2021",
            "doc": True,
            "doctest": False,
            "test": True,
        },
        "profile": {"opt_level": "0", "debuginfo": 2, "test": False},
        "features": [],
        "filenames": filenames,
        "executable": executable,
        "fresh": False,
    }


def test_a_binary_yields_its_executable():
    message = _artifact(["bin"], [f"{OUT}/hello"], executable=f"{OUT}/hello")
    assert artifact_paths(message) == [f"{OUT}/hello"]


def test_an_example_yields_its_executable():
    message = _artifact(
        ["example"], [f"{OUT}/examples/demo"], executable=f"{OUT}/examples/demo", name="demo"
    )
    assert artifact_paths(message) == [f"{OUT}/examples/demo"]


def test_an_rlib_stays_behind():
    message = _artifact(
        ["lib"], [f"{OUT}/deps/libhello-1a2b.rlib", f"{OUT}/deps/libhello-1a2b.rmeta"]
    )
    assert artifact_paths(message) == []


def test_a_cdylib_yields_only_its_shared_object():
    message = _artifact(["cdylib"], [f"{OUT}/libhello.so", f"{OUT}/deps/hello.d"])
    assert artifact_paths(message) == [f"{OUT}/libhello.so"]


def test_a_staticlib_yields_only_its_archive():
    message = _artifact(["staticlib"], [f"{OUT}/libhello.a", f"{OUT}/deps/libhello.rmeta"])
    assert artifact_paths(message) == [f"{OUT}/libhello.a"]


def test_a_library_of_several_kinds_yields_the_shipped_files_in_order():
    message = _artifact(
        ["lib", "cdylib", "staticlib"],
        [f"{OUT}/libhello.rlib", f"{OUT}/libhello.so", f"{OUT}/libhello.a"],
    )
    assert artifact_paths(message) == [f"{OUT}/libhello.so", f"{OUT}/libhello.a"]


def test_a_proc_macro_is_a_compiler_plugin_not_an_artifact():
    message = _artifact(["proc-macro"], [f"{OUT}/deps/libderive_hello-9f.so"])
    assert artifact_paths(message) == []


def test_a_build_script_yields_nothing():
    message = _artifact(
        ["custom-build"],
        ["/work/target/debug/build/hello-3c/build-script-build"],
        executable=None,
        name="build-script-build",
    )
    assert artifact_paths(message) == []


def test_a_build_script_with_an_executable_path_still_yields_nothing():
    path = "/work/target/debug/build/hello-3c/build-script-build"
    assert artifact_paths(_artifact(["custom-build"], [path], executable=path)) == []


def test_a_binary_without_an_executable_path_yields_nothing():
    assert artifact_paths(_artifact(["bin"], [f"{OUT}/hello"], executable=None)) == []


@pytest.mark.parametrize(
    "message",
    [
        {
            "reason": "build-script-executed",
            "package_id": "x",
            "linked_libs": [],
            "linked_paths": [],
            "cfgs": [],
            "env": [],
            "out_dir": "/work/target/out",
        },
        {
            "reason": "compiler-message",
            "package_id": "x",
            "message": {"rendered": "warning: unused", "level": "warning"},
        },
        {"reason": "build-finished", "success": True},
        {
            **_artifact(["bin"], [f"{OUT}/hello"], executable=f"{OUT}/hello"),
            "reason": "compiler-message",
        },
        {},
    ],
    ids=[
        "build-script-executed",
        "compiler-message",
        "build-finished",
        "bin-fields-other-reason",
        "empty",
    ],
)
def test_a_message_that_is_not_a_compiler_artifact_yields_nothing(message):
    assert artifact_paths(message) == []


def test_a_malformed_artifact_message_yields_nothing():
    assert (
        artifact_paths(
            {"reason": "compiler-artifact", "target": "bin", "executable": f"{OUT}/hello"}
        )
        == []
    )


def _collector(max_count=10):
    return ArtifactCollector("/work/target", max_count)


def _bin_line(path):
    return json.dumps(_artifact(["bin"], [path], executable=path))


def test_the_collector_remembers_artifacts_from_json_lines_once_each_in_order():
    collector = _collector()
    bin_line = json.dumps(_artifact(["bin"], [f"{OUT}/hello"], executable=f"{OUT}/hello"))
    so_line = json.dumps(_artifact(["cdylib"], [f"{OUT}/libhello.so"]))
    rlib_line = json.dumps(_artifact(["lib"], [f"{OUT}/libdep.rlib"]))

    assert collector.feed(bin_line) is True
    assert collector.feed(rlib_line) is True
    assert collector.feed(so_line) is True
    assert collector.feed(bin_line) is True

    assert collector.paths == [f"{OUT}/hello", f"{OUT}/libhello.so"]


@pytest.mark.parametrize(
    "line",
    ["   Compiling hello v0.1.0 (/work/src)", "", "{not json", "[1, 2]", "42", '"text"', "null"],
)
def test_the_collector_reports_a_line_that_is_not_a_cargo_message(line):
    collector = _collector()
    assert collector.feed(line) is False
    assert collector.paths == []


@pytest.mark.parametrize("path", [
    "/etc/passwd",
    "/proc/1/environ",
    "/work/src/big.bin",
    "/work/targetx/hello",
    "/work/target/../src/secret",
    "relative/hello",
])
def test_a_forged_message_naming_a_file_outside_the_target_dir_is_refused(path):
    collector = _collector()
    collector.feed(_bin_line(f"{OUT}/hello"))
    assert collector.feed(_bin_line(path)) is True
    assert collector.paths == [f"{OUT}/hello"]
    with pytest.raises(BuildError, match=r"^artifacts: cargo's output names .*outside the "
                                         r"target dir /work/target"):
        collector.check()


def test_the_first_refusal_is_kept_and_nothing_is_collected_after_it():
    collector = _collector()
    collector.feed(_bin_line("/etc/shadow"))
    collector.feed(_bin_line(f"{OUT}/hello"))
    assert collector.paths == []
    with pytest.raises(BuildError, match="/etc/shadow"):
        collector.check()


def test_more_artifacts_than_the_count_limit_are_refused_naming_the_setting():
    collector = _collector(max_count=2)
    for name in ("a", "b", "c", "d"):
        collector.feed(_bin_line(f"{OUT}/{name}"))
    assert collector.paths == [f"{OUT}/a", f"{OUT}/b"]
    with pytest.raises(LimitExceeded) as refused:
        collector.check()
    assert str(refused.value).startswith("artifacts: the build names more than 2 artifacts")
    assert refused.value.setting == "CROSSFARM_ARTIFACT_MAX_COUNT"


def test_a_collector_within_its_limits_checks_clean():
    collector = _collector(max_count=1)
    collector.feed(_bin_line(f"{OUT}/hello"))
    collector.feed(_bin_line(f"{OUT}/hello"))  # the same artifact twice counts once
    collector.check()


def test_the_collector_accepts_a_json_message_that_names_no_artifact():
    collector = _collector()
    assert collector.feed('{"reason": "build-finished", "success": true}') is True
    assert collector.paths == []


@pytest.mark.parametrize(
    ("profile", "directory"),
    [
        ("dev", "debug"),
        ("test", "debug"),
        ("release", "release"),
        ("bench", "release"),
        ("custom", "custom"),
        ("release-lto", "release-lto"),
    ],
)
def test_each_profile_maps_to_its_cargo_output_directory(profile, directory):
    assert profile_dir(profile) == directory


JOB = JobOutput(
    build_id=BuildId("b-0123456789abcdef"),
    job_id="j-0123456789abcdef",
    target="aarch64-unknown-linux-gnu",
    attempt=2,
    profile="dev",
)


@pytest.fixture
def outputs(tmp_path):
    binary = tmp_path / "hello"
    binary.write_bytes(b"\x7fELF" + bytes(range(256)) * 10)
    binary.chmod(0o755)
    library = tmp_path / "libhello.so"
    library.write_bytes(b"shared object")
    library.chmod(0o644)
    return binary, library


def test_the_manifest_lists_each_file_with_its_size_and_sha256(outputs):
    binary, library = outputs
    manifest = build_manifest(JOB, [library, binary])

    by_name = {entry.name: entry for entry in manifest.artifacts}
    assert sorted(by_name) == ["hello", "libhello.so"]
    for path in (binary, library):
        entry = by_name[path.name]
        assert entry.size == len(path.read_bytes())
        assert entry.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_manifest_keys_are_under_the_attempt_prefix(outputs):
    manifest = build_manifest(JOB, list(outputs))
    prefix = keys.job_prefix(JOB.build_id, JOB.target, 2)
    assert prefix.endswith("/attempt-2/")
    for entry in manifest.artifacts:
        assert entry.key == f"{prefix}artifacts/{entry.name}"


def test_the_manifest_marks_executables(outputs):
    manifest = build_manifest(JOB, list(outputs))
    assert {entry.name: entry.executable for entry in manifest.artifacts} == {
        "hello": True,
        "libhello.so": False,
    }


def test_the_manifest_names_the_job_and_its_profile_directory(outputs):
    manifest = build_manifest(JOB, list(outputs))
    assert (manifest.build_id, manifest.job_id, manifest.target, manifest.attempt) == (
        JOB.build_id,
        JOB.job_id,
        JOB.target,
        2,
    )
    assert manifest.profile_dir == "debug"


def test_a_job_without_artifacts_has_an_empty_manifest():
    assert build_manifest(JOB, []).artifacts == []


def test_two_artifacts_with_the_same_name_are_refused(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "hello").write_bytes(folder.encode())
    with pytest.raises(ValueError, match="share a name"):
        build_manifest(JOB, [tmp_path / "a" / "hello", tmp_path / "b" / "hello"])


@pytest.mark.parametrize(("args", "wanted"), [
    (["--timings"], True), (["--locked", "--timings=html"], True), ([], False),
    (["--bin=timings"], False), (["--locked"], False)])
def test_the_timing_report_is_wanted_only_when_cargo_was_asked_for_it(args, wanted):
    assert wants_timings(args) is wanted


def test_the_timing_report_is_collected_from_under_the_target_dir():
    collector = ArtifactCollector("/work/target", max_count=10)
    collector.feed(json.dumps(_artifact(["bin"], [f"{OUT}/hello"], executable=f"{OUT}/hello")))
    collector.add_timings()
    collector.check()
    assert collector.paths == [f"{OUT}/hello", "/work/target/cargo-timings/cargo-timing.html"]


def test_the_timing_report_counts_against_the_artifact_limit():
    collector = ArtifactCollector("/work/target", max_count=1)
    collector.feed(json.dumps(_artifact(["bin"], [f"{OUT}/hello"], executable=f"{OUT}/hello")))
    collector.add_timings()
    with pytest.raises(LimitExceeded):
        collector.check()


EARLIER = keys.artifact_key(BuildId("b-fedcba9876543210"), "x86_64-unknown-linux-gnu", 1, "hello")
BYTES = b"\x7fELF hello"
SHA = hashlib.sha256(BYTES).hexdigest()


def _held_store(note=None, stored=BYTES, sha256=SHA, tenant="acme"):
    """A store holding an earlier build's artifact and the tenant's note of it."""
    storage = FakeStorage()
    if stored is not None:
        storage.objects[EARLIER] = stored
        storage.sha256s[EARLIER] = sha256
    note = {"key": EARLIER, "size": len(BYTES), "sha256": SHA} if note is None else note
    storage.objects[keys.held_artifact_key(tenant, SHA)] = (
        note if isinstance(note, bytes) else json.dumps(note).encode())
    return storage


def test_a_file_the_tenant_already_stores_is_named_by_its_stored_key(tmp_path):
    (tmp_path / "hello").write_bytes(BYTES)
    storage = _held_store()

    manifest = build_manifest(JOB, [tmp_path / "hello"], held_lookup(storage, "acme"))

    [entry] = manifest.artifacts
    assert (entry.key, entry.sha256, entry.size) == (EARLIER, SHA, len(BYTES))


def test_another_tenants_identical_artifact_is_not_looked_up(tmp_path):
    (tmp_path / "hello").write_bytes(BYTES)
    storage = _held_store(tenant="globex")

    manifest = build_manifest(JOB, [tmp_path / "hello"], held_lookup(storage, "acme"))

    assert manifest.artifacts[0].key == keys.artifact_key(JOB.build_id, JOB.target, JOB.attempt,
                                                          "hello")
    # the tenants' notes live under prefixes of their own
    assert keys.held_artifact_key("acme", SHA) != keys.held_artifact_key("globex", SHA)


@pytest.mark.parametrize(("note", "stored", "sha256"), [
    (None, None, SHA),  # the object is gone
    (None, b"\x7fELF another size", SHA),
    (None, BYTES, "cd" * 32),  # stored with another sha256 ...
    (None, BYTES, None),  # ... or with none
    (b"\xff not json", BYTES, SHA),
    ({"key": 3}, BYTES, SHA),
    ({"key": "blobs/ab/" + "ab" * 32}, BYTES, SHA),  # not an artifact's key
    ({"key": EARLIER.replace("artifacts/hello", "manifest.json")}, BYTES, SHA),
    (["not", "a", "note"], BYTES, SHA),
], ids=["gone", "size", "record", "unrecorded", "not-json", "key-type", "blob",
        "manifest", "list"])
def test_a_note_is_believed_only_if_its_object_is_an_artifact_with_those_bytes(
        tmp_path, note, stored, sha256):
    (tmp_path / "hello").write_bytes(BYTES)
    storage = _held_store(note, stored, sha256)
    if sha256 is None:
        del storage.sha256s[EARLIER]

    manifest = build_manifest(JOB, [tmp_path / "hello"], held_lookup(storage, "acme"))

    assert manifest.artifacts[0].key == keys.artifact_key(JOB.build_id, JOB.target, JOB.attempt,
                                                          "hello")


def test_only_the_artifacts_a_job_uploaded_itself_are_noted(tmp_path):
    (tmp_path / "hello").write_bytes(BYTES)
    (tmp_path / "other").write_bytes(b"other bytes")
    storage = _held_store()
    manifest = build_manifest(JOB, [tmp_path / "hello", tmp_path / "other"],
                              held_lookup(storage, "acme"))
    before = dict(storage.objects)

    assert remember_held(storage, "acme", manifest) == 1

    [(key, note)] = [(k, v) for k, v in storage.objects.items() if before.get(k) != v]
    other = hashlib.sha256(b"other bytes").hexdigest()
    assert key == keys.held_artifact_key("acme", other)
    assert json.loads(note) == {"key": keys.artifact_key(JOB.build_id, JOB.target, JOB.attempt,
                                                         "other"),
                                "size": 11, "sha256": other}
