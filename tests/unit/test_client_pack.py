import io
import os
import subprocess
import tarfile

import pytest

from crossfarm.client.pack import list_files, pack
from crossfarm.shared.archive import ArchiveLimits, inspect_archive
from crossfarm.shared.errors import InvalidArchive

SENT = [".gitignore", "Cargo.toml", "run.sh", "src/link.rs", "src/main.rs"]


@pytest.fixture(autouse=True)
def isolated_git(tmp_path, monkeypatch):
    """Keep git from finding a repository above tmp_path or one named by the environment."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)


def _git(root, *args):
    subprocess.run(
        [
            "git",
            "-c",
            "user.email=test@example.com",
            "-c",
            "user.name=Test",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=root,
        check=True,
        capture_output=True,
    )


def _make_crate(root):
    (root / "src").mkdir(parents=True)
    (root / "Cargo.toml").write_text('[package]\nname = "hello"\nversion = "0.1.0"\n')
    (root / "src" / "main.rs").write_text('fn main() { println!("hi"); }\n')
    (root / ".gitignore").write_text("*.log\n")
    (root / "x.log").write_text("noise\n")
    (root / "run.sh").write_text("#!/bin/sh\ncargo run\n")
    (root / "run.sh").chmod(0o755)
    (root / "target" / "debug").mkdir(parents=True)
    (root / "target" / "debug" / "hello").write_bytes(b"\x7fELF")
    (root / "src" / "link.rs").symlink_to("main.rs")
    return root


@pytest.fixture(params=["plain", "git-untracked", "git-committed"])
def crate(request, tmp_path):
    root = _make_crate(tmp_path / "crate")
    if request.param != "plain":
        _git(root, "init", "-q")
    if request.param == "git-committed":
        _git(root, "add", "-A")
        _git(root, "commit", "-q", "-m", "crate")
    return root


def _members(packed):
    with tarfile.open(fileobj=io.BytesIO(packed.data), mode="r:gz") as tar:
        return {member.name: member for member in tar.getmembers()}


def test_the_archive_holds_what_git_would_track(crate):
    packed = pack(crate)
    assert sorted(_members(packed)) == SENT
    assert packed.files == len(SENT)


def test_list_files_leaves_out_target_and_ignored_files(crate):
    assert list_files(crate) == SENT


def test_a_symlink_travels_as_a_symlink(crate):
    link = _members(pack(crate))["src/link.rs"]
    assert link.issym()
    assert link.linkname == "main.rs"


def test_files_keep_their_contents_and_executable_bit(crate):
    packed = pack(crate)
    members = _members(packed)
    with tarfile.open(fileobj=io.BytesIO(packed.data), mode="r:gz") as tar:
        assert tar.extractfile("src/main.rs").read() == (crate / "src" / "main.rs").read_bytes()
    assert members["run.sh"].mode == 0o755
    assert members["Cargo.toml"].mode == 0o644
    assert packed.total_bytes == sum(m.size for m in members.values())


def test_entries_carry_no_times_or_owners(crate):
    for member in _members(pack(crate)).values():
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (
            0,
            0,
            0,
            "",
            "",
        )


def test_the_archive_passes_the_controllers_checks(crate):
    packed = pack(crate)
    summary = inspect_archive(io.BytesIO(packed.data), ArchiveLimits())
    assert summary.files == packed.files
    assert summary.total_bytes == packed.total_bytes


def test_packing_the_same_tree_twice_gives_the_same_digest(crate):
    first = pack(crate)
    os.utime(crate / "src" / "main.rs", (1_000_000, 1_000_000))
    (crate / "y.log").write_text("more noise\n")
    (crate / "target" / "debug" / "hello").write_bytes(b"rebuilt")
    second = pack(crate)
    assert second.digest == first.digest
    assert second.data == first.data


def test_the_digest_does_not_depend_on_where_the_tree_is(tmp_path):
    a = pack(_make_crate(tmp_path / "one"))
    b = pack(_make_crate(tmp_path / "elsewhere" / "two"))
    assert a.digest == b.digest


def test_a_one_byte_change_gives_a_different_digest(crate):
    before = pack(crate)
    (crate / "src" / "main.rs").write_text('fn main() { println!("ho"); }\n')
    assert pack(crate).digest != before.digest


def test_an_executable_bit_change_gives_a_different_digest(crate):
    before = pack(crate)
    (crate / "Cargo.toml").chmod(0o755)
    assert pack(crate).digest != before.digest


@pytest.mark.parametrize("target", ["../../outside", "/etc/passwd"])
def test_a_symlink_out_of_the_tree_is_refused_by_name(crate, target):
    (crate / "src" / "escape").symlink_to(target)
    with pytest.raises(InvalidArchive, match="outside the source tree") as exc:
        pack(crate)
    assert exc.value.member == "src/escape"
    assert "src/escape" in str(exc.value)


def test_a_file_over_the_size_limit_is_refused_by_name(crate):
    with pytest.raises(InvalidArchive) as exc:
        pack(crate, ArchiveLimits(max_file_bytes=20))
    assert exc.value.member in SENT
    assert "the limit is 20" in str(exc.value)


def test_too_many_files_are_refused(crate):
    with pytest.raises(InvalidArchive, match="the limit is 4"):
        pack(crate, ArchiveLimits(max_files=4))


def test_a_tracked_file_deleted_from_the_tree_is_left_out(tmp_path):
    root = _make_crate(tmp_path / "crate")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "crate")
    (root / "run.sh").unlink()
    assert sorted(_members(pack(root))) == [n for n in SENT if n != "run.sh"]


def test_a_crate_inside_a_larger_repository_is_listed_from_its_own_directory(tmp_path):
    repo = tmp_path / "repo"
    root = _make_crate(repo / "crates" / "hello")
    (repo / "README.md").write_text("workspace\n")
    _git(repo, "init", "-q")
    assert sorted(_members(pack(root))) == SENT


# With no repository, list_files points GIT_WORK_TREE at `root` but also runs
# `git -C root`, so a relative `root` is looked up again inside itself.
def test_a_relative_path_to_a_plain_directory_packs_like_an_absolute_one(tmp_path, monkeypatch):
    root = _make_crate(tmp_path / "crate")
    monkeypatch.chdir(tmp_path)
    assert pack(root.relative_to(tmp_path)).digest == pack(root).digest


def test_a_crate_in_an_ignored_part_of_a_repository_is_listed_on_its_own(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".gitignore").write_text(".crossfarm/\n")
    (repo / "README.md").write_text("outer\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "outer")
    root = _make_crate(repo / ".crossfarm" / "demo")
    assert list_files(root) == SENT
    assert sorted(_members(pack(root))) == SENT
