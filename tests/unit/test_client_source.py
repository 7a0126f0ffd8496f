import hashlib
import os
import subprocess
import threading

import pytest

from crossfarm.client.source import list_files, scan, send, special_files
from crossfarm.shared.errors import InvalidSource
from crossfarm.shared.tree import TreeLimits, check_tree, read_pack, tree_digest
from crossfarm.shared.wire import MissingBlobs, SourceStatus

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


def _entries(local):
    return {entry.path: entry for entry in local.tree.entries}


def _sha(data):
    return hashlib.sha256(data).hexdigest()


class FakeFarm:
    """A BlobSink that keeps blobs in memory and records every call."""

    def __init__(self):
        self.blobs = {}
        self.queries = []
        self.uploads = []
        self.packs = []
        self.trees = []
        self._lock = threading.Lock()

    def missing_blobs(self, digests):
        self.queries.append(list(digests))
        return MissingBlobs(missing=[d for d in digests if d not in self.blobs])

    def put_pack(self, pack):
        with self._lock:
            self.packs.append(pack)
        for digest, data in read_pack(pack, TreeLimits()):
            with self._lock:
                self.uploads.append(digest)
                self.blobs[digest] = data

    def create_source(self, tree):
        assert all(e.sha256 in self.blobs for e in tree.entries if e.kind == "file")
        summary = check_tree(tree, TreeLimits())
        self.trees.append(tree)
        return SourceStatus(
            digest=tree_digest(tree), files=summary.files, total_bytes=summary.total_bytes
        )


def test_list_files_leaves_out_target_and_ignored_files(crate):
    assert list_files(crate) == SENT


def test_the_tree_holds_what_git_would_track(crate):
    assert sorted(_entries(scan(crate))) == SENT


def test_a_symlink_is_kept_as_a_symlink_with_its_target(crate):
    link = _entries(scan(crate))["src/link.rs"]
    assert link.kind == "symlink"
    assert link.target == "main.rs"
    assert link.sha256 is None


def test_files_are_named_by_the_sha256_of_their_contents(crate):
    local = scan(crate)
    main = _entries(local)["src/main.rs"]
    data = (crate / "src" / "main.rs").read_bytes()
    assert main.sha256 == _sha(data)
    assert main.size == len(data)
    assert local.files[main.sha256].read_bytes() == data


def test_the_executable_bit_is_recorded(crate):
    entries = _entries(scan(crate))
    assert entries["run.sh"].executable is True
    assert entries["Cargo.toml"].executable is False


def test_the_tree_passes_the_farms_checks(crate):
    local = scan(crate)
    summary = check_tree(local.tree, TreeLimits())
    assert summary.files == len(SENT)
    assert summary.total_bytes == local.total_bytes
    assert local.digest == tree_digest(local.tree)


def test_scanning_the_same_tree_twice_gives_the_same_digest(crate):
    first = scan(crate)
    os.utime(crate / "src" / "main.rs", (1_000_000, 1_000_000))
    (crate / "y.log").write_text("more noise\n")
    (crate / "target" / "debug" / "hello").write_bytes(b"rebuilt")
    second = scan(crate)
    assert second.digest == first.digest
    assert second.tree == first.tree


def test_the_digest_does_not_depend_on_where_the_tree_is(tmp_path):
    a = scan(_make_crate(tmp_path / "one"))
    b = scan(_make_crate(tmp_path / "elsewhere" / "two"))
    assert a.digest == b.digest


def test_a_one_byte_change_changes_one_entry_and_the_digest(crate):
    before = scan(crate)
    (crate / "src" / "main.rs").write_text('fn main() { println!("ho"); }\n')
    after = scan(crate)
    old, new = _entries(before), _entries(after)
    assert [p for p in SENT if old[p].sha256 != new[p].sha256] == ["src/main.rs"]
    assert after.digest != before.digest


def test_an_executable_bit_change_changes_the_digest(crate):
    before = scan(crate)
    (crate / "Cargo.toml").chmod(0o755)
    assert scan(crate).digest != before.digest


@pytest.mark.parametrize("target", ["../../outside", "/etc/passwd"])
def test_a_symlink_out_of_the_tree_is_refused_by_name(crate, target):
    (crate / "src" / "escape").symlink_to(target)
    with pytest.raises(InvalidSource, match="outside the source tree") as exc:
        scan(crate)
    assert exc.value.path == "src/escape"
    assert "src/escape" in str(exc.value)


def test_a_file_over_the_size_limit_is_refused_by_name_before_anything_is_sent(crate):
    (crate / "big.bin").write_bytes(b"\0" * 100)
    farm = FakeFarm()
    with pytest.raises(InvalidSource, match="the limit is 99") as exc:
        send(farm, scan(crate, TreeLimits(max_file_bytes=99)))
    assert exc.value.path == "big.bin"
    assert (farm.queries, farm.uploads, farm.trees) == ([], [], [])


def test_too_many_files_are_refused(crate):
    with pytest.raises(InvalidSource, match="the farm's limit is 4"):
        scan(crate, TreeLimits(max_files=4))


def test_a_tracked_file_deleted_from_the_tree_is_left_out(tmp_path):
    root = _make_crate(tmp_path / "crate")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "crate")
    (root / "run.sh").unlink()
    assert sorted(_entries(scan(root))) == [n for n in SENT if n != "run.sh"]


def test_a_crate_inside_a_larger_repository_is_listed_from_its_own_directory(tmp_path):
    repo = tmp_path / "repo"
    root = _make_crate(repo / "crates" / "hello")
    (repo / "README.md").write_text("workspace\n")
    _git(repo, "init", "-q")
    assert list_files(root) == SENT
    assert sorted(_entries(scan(root))) == SENT


# With no repository, list_files points GIT_WORK_TREE at `root` but also runs
# `git -C root`, so a relative `root` would be looked up again inside itself.
def test_a_relative_path_to_a_plain_directory_scans_like_an_absolute_one(tmp_path, monkeypatch):
    root = _make_crate(tmp_path / "crate")
    monkeypatch.chdir(tmp_path)
    assert list_files(root.relative_to(tmp_path)) == SENT
    assert scan(root.relative_to(tmp_path)).digest == scan(root).digest


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
    assert sorted(_entries(scan(root))) == SENT


def test_the_first_send_uploads_each_distinct_blob_once(crate):
    (crate / "src" / "copy.rs").write_bytes((crate / "src" / "main.rs").read_bytes())
    local = scan(crate)
    farm = FakeFarm()

    report = send(farm, local)

    files = [e for e in local.tree.entries if e.kind == "file"]
    distinct = {e.sha256: e.size for e in files}
    assert len(distinct) == len(files) - 1  # main.rs and copy.rs share a blob
    assert sorted(farm.uploads) == sorted(distinct)
    assert report.blobs_sent == len(distinct)
    assert report.bytes_sent == sum(distinct.values())
    assert report.status.digest == local.digest
    assert farm.trees == [local.tree]


def test_a_second_send_of_the_same_tree_uploads_nothing(crate):
    farm = FakeFarm()
    send(farm, scan(crate))
    farm.uploads.clear()

    report = send(farm, scan(crate))

    assert farm.uploads == []
    assert (report.blobs_sent, report.bytes_sent) == (0, 0)
    assert len(farm.trees) == 2


def test_a_one_line_change_uploads_only_that_file(crate):
    farm = FakeFarm()
    send(farm, scan(crate))
    farm.uploads.clear()
    (crate / "src" / "main.rs").write_text('fn main() { println!("changed"); }\n')

    local = scan(crate)
    report = send(farm, local)

    changed = _entries(local)["src/main.rs"]
    assert farm.uploads == [changed.sha256]
    assert (report.blobs_sent, report.bytes_sent) == (1, changed.size)


def test_progress_sees_cumulative_bytes_ending_at_the_total(crate):
    local = scan(crate)
    seen = []

    report = send(FakeFarm(), local, lambda sent, total: seen.append((sent, total)))

    assert 1 <= len(seen) <= report.blobs_sent  # once per pack
    sents = [sent for sent, _ in seen]
    assert sents == sorted(sents)
    assert all(total == report.bytes_sent for _, total in seen)
    assert seen[-1] == (report.bytes_sent, report.bytes_sent)
    assert report.bytes_sent == local.total_bytes


def test_many_small_files_travel_in_few_packs(tmp_path):
    root = tmp_path / "many"
    (root / "src").mkdir(parents=True)
    (root / "Cargo.toml").write_text('[package]\nname = "many"\n')
    for i in range(4500):
        (root / "src" / f"f{i}.rs").write_text(f"// {i}\n")
    farm = FakeFarm()
    report = send(farm, scan(root))
    assert report.blobs_sent == 4501
    assert len(farm.packs) == 3  # at most 2000 files a pack
    assert sorted(farm.uploads) == sorted(set(farm.uploads))


def test_a_fifo_is_refused_by_name_unless_gitignore_covers_it(crate):
    os.mkfifo(crate / "src" / "pipe")
    with pytest.raises(InvalidSource, match="a FIFO, socket or device cannot be sent") as exc:
        scan(crate)
    assert exc.value.path == "src/pipe"
    (crate / ".gitignore").write_text("*.log\nsrc/pipe\n")
    assert "src/pipe" not in _entries(scan(crate))


def test_a_fifo_in_target_or_an_ignored_directory_is_not_looked_at(crate):
    (crate / ".gitignore").write_text("*.log\nscratch/\n")
    (crate / "scratch" / "deep").mkdir(parents=True)
    os.mkfifo(crate / "scratch" / "deep" / "pipe")
    os.mkfifo(crate / "target" / "debug" / "pipe")
    assert special_files(crate) == []
    assert "scratch/deep/pipe" not in _entries(scan(crate))
