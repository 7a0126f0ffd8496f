import hashlib
import tarfile

import pytest

from crossfarm.shared.wire import SourceTree, TreeEntry
from crossfarm.worker.source import container_tar

UID = 1234
BLOBS = {
    "Cargo.toml": b'[package]\nname = "hello"\n',
    "src/main.rs": b"fn main() {}\n",
    "src/bin/tool.rs": b"fn main() { tool() }\n",
    "scripts/run.sh": b"#!/bin/sh\n",
    "src/copy.rs": b"fn main() {}\n",  # same bytes as src/main.rs: one blob
}
EXECUTABLE = {"scripts/run.sh"}


def _sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path):
    cache = tmp_path / "blobs"
    cache.mkdir()
    for data in BLOBS.values():
        (cache / _sha(data)).write_bytes(data)
    return cache


TREE = SourceTree(
    entries=[
        *(
            TreeEntry(
                path=path,
                kind="file",
                sha256=_sha(data),
                size=len(data),
                executable=path in EXECUTABLE,
            )
            for path, data in BLOBS.items()
        ),
        TreeEntry(path="src/lib.rs", kind="symlink", target="main.rs"),
        TreeEntry(path="docs/guide/link", kind="symlink", target="../../Cargo.toml"),
    ]
)


def _members(cache, prefix="src"):
    with container_tar(TREE, cache, prefix, UID) as out, tarfile.open(fileobj=out) as tar:
        members = tar.getmembers()
        contents = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}
    return members, contents


def test_every_member_is_owned_by_the_build_user(cache):
    members, _ = _members(cache)
    assert {(m.uid, m.gid) for m in members} == {(UID, UID)}


@pytest.mark.parametrize("prefix", ["src", "work/src"])
def test_every_member_sits_under_the_prefix(cache, prefix):
    members, _ = _members(cache, prefix)
    assert all(
        m.name == prefix or m.name.startswith(prefix + "/")
        for m in members
        if not prefix.startswith(m.name + "/")
    )
    entries = {m.name.removeprefix(prefix + "/") for m in members if not m.isdir()}
    assert entries == {e.path for e in TREE.entries}


# Docker creates a directory a tar does not list as root:root, and cargo writes
# Cargo.lock into the crate root, so the prefix itself must be in the tar.
@pytest.mark.parametrize("prefix", ["src", "work/src"])
def test_each_directory_comes_once_before_its_children_including_the_prefix(cache, prefix):
    members, _ = _members(cache, prefix)
    names = [m.name for m in members]
    directories = [m.name for m in members if m.isdir()]
    assert len(directories) == len(set(directories))
    expected = {
        prefix,
        *(f"{prefix}/{d}" for d in ("src", "src/bin", "scripts", "docs", "docs/guide")),
    }
    assert expected <= set(directories)
    for index, name in enumerate(names):
        parent = name.rpartition("/")[0]
        if parent.startswith(prefix):
            assert parent in names[:index], f"{name} comes before its directory {parent}"


def test_directories_are_owned_by_the_build_user_and_searchable(cache):
    members, _ = _members(cache)
    for member in members:
        if member.isdir():
            assert member.mode == 0o755


def test_file_modes_follow_the_executable_bit(cache):
    members, _ = _members(cache)
    modes = {m.name: m.mode for m in members if m.isfile()}
    assert modes == {f"src/{path}": 0o755 if path in EXECUTABLE else 0o644 for path in BLOBS}


def test_symlinks_are_members_with_their_link_names(cache):
    members, _ = _members(cache)
    links = {m.name: m.linkname for m in members if m.issym()}
    assert links == {"src/src/lib.rs": "main.rs", "src/docs/guide/link": "../../Cargo.toml"}


def test_file_contents_are_the_blobs(cache):
    _, contents = _members(cache)
    assert contents == {f"src/{path}": data for path, data in BLOBS.items()}


def test_files_are_at_mtime_0_unless_given_one_which_keeps_its_fraction_of_a_second(cache):
    with container_tar(TREE, cache, "src", UID) as out, tarfile.open(fileobj=out) as tar:
        assert {m.mtime for m in tar.getmembers()} == {0}
    mtimes = {"src/main.rs": 1796163046.123456}
    with (container_tar(TREE, cache, "src", UID, mtimes=mtimes) as out,
          tarfile.open(fileobj=out) as tar):
        given = tar.getmember("src/src/main.rs")
        assert (given.mtime, given.pax_headers["mtime"]) == (1796163046.123456,
                                                             "1796163046.123456")
        assert tar.getmember("src/Cargo.toml").mtime == 0
