"""The worker's own dependency fetching: what a Cargo.lock may pin, how a downloaded
crate is checked, and what lands in the shared read-only deps volume."""

import hashlib
import io
import tarfile

import httpx
import pytest
from fakes import FakeCrates, FakeDocker, FakeShelf

from crossfarm.shared import keys
from crossfarm.worker.deps import (
    CRATES_IO,
    DependencyCache,
    DependencyError,
    LockedCrate,
    Registry,
    install_tar,
    locked_crates,
    vendor_tar,
)

SHA = "ab" * 32


def _lock(*packages: str) -> str:
    return "version = 4\n" + "".join(f"\n[[package]]\n{p}\n" for p in packages)


def _crate_file(members: dict[str, bytes | None], kinds: dict[str, bytes] | None = None
                ) -> bytes:
    """A gzip'd tar; a None body makes a folder; `kinds` overrides a member's type."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            info.type = (kinds or {}).get(name, tarfile.REGTYPE)
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return out.getvalue()


def _entries(crate: LockedCrate, data: bytes) -> dict[str, tarfile.TarInfo]:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as dst:
        install_tar(crate, io.BytesIO(data), dst)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        return {member.name: member for member in tar}


def test_registry_packages_are_pinned_by_name_version_and_sha256():
    lock = _lock('name = "app"\nversion = "0.1.0"',
                 f'name = "itoa"\nversion = "1.0.19"\nsource = "{CRATES_IO}"\nchecksum = "{SHA}"')
    assert locked_crates(lock) == [LockedCrate("itoa", "1.0.19", SHA)]


def test_a_version_1_lock_file_keeps_its_checksums_in_metadata():
    lock = (f'[[package]]\nname = "itoa"\nversion = "1.0.0"\nsource = "{CRATES_IO}"\n\n'
            f'[metadata]\n"checksum itoa 1.0.0 ({CRATES_IO})" = "{SHA}"\n')
    assert locked_crates(lock) == [LockedCrate("itoa", "1.0.0", SHA)]


@pytest.mark.parametrize(("package", "says"), [
    ('name = "x"\nversion = "1.0.0"\nsource = "git+https://example.invalid/x#abc"',
     "is a git dependency"),
    ('name = "x"\nversion = "1.0.0"\nsource = "registry+https://other.invalid/index"',
     "the farm fetches only crates.io"),
    (f'name = "x"\nversion = "1.0.0"\nsource = "{CRATES_IO}"', "has no sha256 checksum"),
    (f'name = "x"\nversion = "1.0.0"\nsource = "{CRATES_IO}"\nchecksum = "nothex"',
     "has no sha256 checksum"),
    (f'name = "../x"\nversion = "1.0.0"\nsource = "{CRATES_IO}"\nchecksum = "{SHA}"',
     "malformed name or version"),
    (f'name = "x"\nversion = "1.0.0/../../y"\nsource = "{CRATES_IO}"\nchecksum = "{SHA}"',
     "malformed name or version"),
])
def test_what_the_worker_cannot_fetch_and_verify_itself_is_refused_with_why(package, says):
    with pytest.raises(DependencyError, match=says):
        locked_crates(_lock(package))


def test_a_lock_file_that_is_not_toml_is_refused():
    with pytest.raises(DependencyError, match="not valid TOML"):
        locked_crates("[[package]\n")


def test_a_crate_is_unpacked_under_its_sha256_read_only_and_root_owned():
    crate = LockedCrate("x", "1.0.0", SHA)
    entries = _entries(crate, _crate_file({"x-1.0.0": None, "x-1.0.0/Cargo.toml": b"[package]",
                                           "x-1.0.0/run.sh": b"#!/bin/sh"}))
    assert list(entries) == [SHA, f"{SHA}/Cargo.toml", f"{SHA}/run.sh",
                             f"{SHA}/.cargo-checksum.json"]  # the checksum file last
    assert {(e.uid, e.gid) for e in entries.values()} == {(0, 0)}
    assert entries[f"{SHA}/Cargo.toml"].mode == 0o444
    assert entries[f"{SHA}/run.sh"].mode == 0o555
    assert entries[SHA].mode == 0o555


@pytest.mark.parametrize(("members", "kinds", "says"), [
    ({"x-1.0.0/../../etc/passwd": b"x"}, None, "outside the crate's folder"),
    ({"/abs": b"x"}, None, "outside the crate's folder"),
    ({"y-1.0.0/lib.rs": b"x"}, None, "outside the crate's folder"),
    ({"x-1.0.0/link": b""}, {"x-1.0.0/link": tarfile.SYMTYPE}, "not a regular file"),
    ({"x-1.0.0/dev": b""}, {"x-1.0.0/dev": tarfile.CHRTYPE}, "not a regular file"),
])
def test_a_crate_with_links_devices_or_paths_outside_its_folder_is_not_used(
        members, kinds, says):
    with pytest.raises(DependencyError, match=says):
        _entries(LockedCrate("x", "1.0.0", SHA), _crate_file(members, kinds))


def test_a_crate_that_unpacks_to_far_more_than_its_size_is_not_used():
    bomb = _crate_file({"x-1.0.0/zeros": b"\0" * (64 << 20)})  # compresses ~1000:1
    with pytest.raises(DependencyError, match="unpacks to more than"):
        _entries(LockedCrate("x", "1.0.0", SHA), bomb)


def test_the_build_gets_links_into_the_deps_volume_and_its_own_cargo_home():
    out = io.BytesIO()
    vendor_tar([LockedCrate("x", "1.0.0", SHA)], 10001, out, lock_file=b"version = 4\n")
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        link = tar.getmember("vendor/x-1.0.0")
        config = tar.extractfile("cargo-home/config.toml").read().decode()
        lock = tar.extractfile("src/Cargo.lock").read()
        owners = {(m.uid, m.gid) for m in tar}
    assert (link.issym(), link.linkname) == (True, f"/deps/{SHA}")
    assert 'replace-with = "crossfarm-vendored"' in config
    assert lock == b"version = 4\n"
    assert owners == {(10001, 10001)}


def _registry(body: bytes, status: int = 200, max_bytes: int = 1 << 20) -> Registry:
    return Registry("https://registry.invalid/crates", max_bytes, transport=httpx.MockTransport(
        lambda request: httpx.Response(status, content=body)))


def test_a_download_is_kept_only_if_its_sha256_is_the_lock_files():
    data = b"crate bytes"
    crate = LockedCrate("x", "1.0.0", hashlib.sha256(data).hexdigest())
    out = io.BytesIO()
    _registry(data).download(crate, out)
    assert out.getvalue() == data
    with pytest.raises(DependencyError, match=r"sha256 is not the one in Cargo\.lock"):
        _registry(b"other bytes").download(crate, io.BytesIO())


def test_a_download_past_the_size_limit_or_refused_by_the_registry_fails_with_why():
    crate = LockedCrate("x", "1.0.0", SHA)
    with pytest.raises(DependencyError, match="larger than the farm's limit of 1024 bytes"):
        _registry(b"x" * 4096, max_bytes=1024).download(crate, io.BytesIO())
    with pytest.raises(DependencyError, match="the registry answered 404"):
        _registry(b"", status=404).download(crate, io.BytesIO())


def test_a_download_the_registry_fails_for_a_moment_is_tried_again():
    data = b"crate bytes"
    crate = LockedCrate("x", "1.0.0", hashlib.sha256(data).hexdigest())
    answers = iter([httpx.Response(503), httpx.Response(200, content=data)])
    registry = Registry("https://registry.invalid/crates", 1 << 20,
                        transport=httpx.MockTransport(lambda request: next(answers)))
    out = io.BytesIO()
    registry.download(crate, out)
    assert out.getvalue() == data


def test_a_registry_that_keeps_failing_fails_the_download_with_why():
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    registry = Registry("https://registry.invalid/crates", 1 << 20,
                        transport=httpx.MockTransport(refuse))
    with pytest.raises(DependencyError, match="download failed 3 times: ConnectError"):
        registry.download(LockedCrate("x", "1.0.0", SHA), io.BytesIO())


def _cache(tmp_path, docker, registry):
    return DependencyCache(runner=docker, crates=registry, volume="deps", image="builder",
                           lock_path=tmp_path / "deps.lock", scratch=tmp_path)


def _one_crate(name="itoa", version="1.0.0"):
    data = _crate_file({f"{name}-{version}/Cargo.toml": b"[package]\n"})
    crate = LockedCrate(name, version, hashlib.sha256(data).hexdigest())
    return crate, FakeCrates({f"{name}-{version}": data})


def test_a_rebuild_whose_crates_this_worker_installed_asks_the_engine_nothing(tmp_path):
    crate, registry = _one_crate()
    docker = FakeDocker()
    cache = _cache(tmp_path, docker, registry)

    assert cache.provide([crate], print) == 1
    calls = len(docker.calls)
    assert cache.provide([crate], print) == 0

    assert docker.calls[calls:] == ["volume_labels"]  # no shelf container
    assert keys.labelled_deps_id(docker.kept["deps"]) is not None
    assert registry.downloaded == ["itoa-1.0.0"]


def test_a_crate_the_record_does_not_list_is_looked_for_in_the_volume(tmp_path):
    crate, registry = _one_crate()
    other, more = _one_crate("ryu", "1.0.1")
    registry.crates.update(more.crates)
    docker = FakeDocker()
    _cache(tmp_path, docker, registry).provide([crate], print)
    # another worker on this engine installed `other` meanwhile
    _cache(tmp_path / "elsewhere", docker, registry).provide([other], print)

    assert _cache(tmp_path, docker, registry).provide([crate, other], print) == 0
    assert docker.calls.count("shelf") == 3
    assert registry.downloaded == ["itoa-1.0.0", "ryu-1.0.1"]


def test_a_deps_volume_removed_and_made_again_is_filled_again(tmp_path):
    crate, registry = _one_crate()
    docker = FakeDocker()
    cache = _cache(tmp_path, docker, registry)
    cache.provide([crate], print)
    first = docker.kept["deps"]

    docker.remove_volume("deps")
    assert cache.provide([crate], print) == 1

    assert docker.kept["deps"] != first  # a new id: the old record does not hold for it
    assert registry.downloaded == ["itoa-1.0.0", "itoa-1.0.0"]


def test_a_deps_volume_made_without_an_id_is_asked_every_time(tmp_path):
    crate, registry = _one_crate()
    docker = FakeDocker()
    docker.shelves["deps"] = FakeShelf()  # made by an older worker: no labels
    cache = _cache(tmp_path, docker, registry)

    cache.provide([crate], print)
    assert cache.provide([crate], print) == 0

    assert docker.calls.count("shelf") == 2
    assert "deps" not in docker.kept
    assert registry.downloaded == ["itoa-1.0.0"]
