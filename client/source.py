"""Describe a crate as a source tree and send the farm only the files it lacks.

Files are what git would track: tracked plus untracked-but-not-ignored, so
.gitignore is honoured and target/ never travels. A directory that is not a git
checkout (or sits in an ignored part of one) is listed with a throwaway git
index, so its .gitignore counts too. Each file is named by its sha256; the farm
answers which of those it lacks, and only those are uploaded.
"""

from __future__ import annotations

import functools
import os
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from crossfarm.shared.errors import InvalidSource
from crossfarm.shared.tree import TreeLimits, check_tree, pack_bytes, sha256_file, tree_digest
from crossfarm.shared.wire import MissingBlobs, SourceStatus, SourceTree, TreeEntry

#: Parallel pack uploads: hides per-request latency on a slow link.
_UPLOADS = 4
#: A pack's size before compression, and its file count: a few requests for a whole
#: crate, each small enough to retry cheaply.
_PACK_BYTES = 8 * 1024 * 1024
_PACK_FILES = 2000


@dataclass(frozen=True)
class LocalTree:
    """A scanned crate: its tree, its digest, and where each blob's bytes are on disk."""

    root: Path
    tree: SourceTree
    digest: str
    files: dict[str, Path]  # sha256 -> one local file with those bytes
    total_bytes: int


@dataclass(frozen=True)
class SendReport:
    status: SourceStatus
    blobs_sent: int
    bytes_sent: int


class BlobSink(Protocol):
    """The part of the farm's API that sending a tree needs."""

    def missing_blobs(self, digests: list[str]) -> MissingBlobs: ...
    def put_pack(self, pack: bytes) -> None: ...
    def create_source(self, tree: SourceTree) -> SourceStatus: ...


def _batches(digests: list[str], sizes: dict[str, int]) -> list[list[str]]:
    """Group blobs into packs of at most _PACK_BYTES (a larger file goes alone)."""
    batches: list[list[str]] = []
    current: list[str] = []
    current_bytes = 0
    for digest in digests:
        if current and (current_bytes + sizes[digest] > _PACK_BYTES
                        or len(current) >= _PACK_FILES):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(digest)
        current_bytes += sizes[digest]
    if current:
        batches.append(current)
    return batches


#: Never sent, whatever .gitignore says.
_NEVER = ("target", ".git")


def list_files(root: Path) -> list[str]:
    """The crate's files, relative to `root`, as git sees them (ignores honoured)."""
    with _git_at(root.resolve()) as git:
        return _listed(git)


def special_files(root: Path) -> list[str]:
    """FIFOs, sockets and devices in the crate that .gitignore does not cover. Git never
    lists them, so without this look they would silently stay behind."""
    root = root.resolve()
    with _git_at(root) as git:
        return _special(root, git)


#: Runs one git command in the crate's repository: args, then stdin.
Git = Callable[..., subprocess.CompletedProcess[bytes]]


@contextmanager
def _git_at(root: Path) -> Iterator[Git]:
    """git in `root`: its own repository's, or a throwaway one's when `root` is not a
    checkout (or sits in an ignored part of one), so .gitignore counts either way.
    Decided (and the throwaway made) once, for every command of one scan."""
    def run(*args: str, stdin: bytes | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["git", "-C", str(root), *args], env=env, input=stdin,
                              capture_output=True)

    if _tracked_by_git(root):
        yield run
        return
    with tempfile.TemporaryDirectory() as gitdir:
        env = {**os.environ, "GIT_DIR": gitdir, "GIT_WORK_TREE": str(root)}
        # no template: nothing to copy in (hooks, samples) nor to delete again, and no
        # init.templateDir of the user's that could put anything there
        subprocess.run(["git", "init", "-q", "--template="], env=env, check=True,
                       capture_output=True)
        yield functools.partial(run, env=env)


def _listed(git: Git) -> list[str]:
    names = _ls_files(git, "--cached", "--others", "--exclude-standard")
    return sorted(n for n in names if n.split("/")[0] not in _NEVER)


def _ls_files(git: Git, *options: str) -> set[str]:
    listed = git("ls-files", "-z", *options, "--", ".")
    if listed.returncode != 0:
        raise InvalidSource(f"git ls-files failed: {listed.stderr.decode().strip()}")
    return {name for name in listed.stdout.decode().split("\0") if name}


def _special(root: Path, git: Git) -> list[str]:
    ignored_dirs = {name for name in _ls_files(
        git, "--others", "--ignored", "--exclude-standard", "--directory") if name.endswith("/")}
    found = []
    for directory, subdirs, names in os.walk(root):
        here = Path(directory).relative_to(root)
        subdirs[:] = [d for d in subdirs
                      if d not in _NEVER and f"{(here / d).as_posix()}/" not in ignored_dirs]
        found += [(here / name).as_posix() for name in names
                  if not stat.S_ISREG(mode := (Path(directory) / name).lstat().st_mode)
                  and not stat.S_ISLNK(mode)]
    if not found:
        return []
    # git lists no special file, ignored or not: ask about each one found
    checked = git("check-ignore", "-z", "--stdin", stdin="\0".join(found).encode())
    ignored = set(checked.stdout.decode().split("\0"))
    return sorted(name for name in found if name not in ignored)


def _tracked_by_git(root: Path) -> bool:
    """Inside a git work tree, and not in a part of it that the tree ignores."""
    inside = subprocess.run(["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
                            capture_output=True, text=True)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return False
    ignored = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", "."],
                             capture_output=True)
    return ignored.returncode != 0


def scan(root: Path, limits: TreeLimits | None = None) -> LocalTree:
    """Hash every file of the crate at `root`; refuses unsafe entries before anything is sent."""
    limits = limits or TreeLimits()
    root = root.resolve()
    with _git_at(root) as git:
        names = [n for n in _listed(git) if (root / n).exists() or (root / n).is_symlink()]
        special = _special(root, git)
    if special:
        raise InvalidSource("a FIFO, socket or device cannot be sent: remove it or add it "
                            "to .gitignore", special[0])
    if len(names) > limits.max_files:
        raise InvalidSource(f"{len(names)} files; the farm's limit is {limits.max_files}")
    entries: list[TreeEntry] = []
    files: dict[str, Path] = {}
    for name in names:
        entry = _entry(root, name, limits)
        entries.append(entry)
        if entry.sha256:
            files.setdefault(entry.sha256, root / name)
    tree = SourceTree(entries=entries)
    summary = check_tree(tree, limits)
    return LocalTree(root=root, tree=tree, digest=tree_digest(tree), files=files,
                     total_bytes=summary.total_bytes)


def _entry(root: Path, name: str, limits: TreeLimits) -> TreeEntry:
    if name.endswith("/"):  # git lists an untracked nested repository as its directory
        raise InvalidSource("a nested git repository: add its files to this repository "
                            "(crossfarm does not send submodules) or remove its .git", name)
    path = root / name
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return TreeEntry(path=name, kind="symlink", target=os.readlink(path))
    if not stat.S_ISREG(st.st_mode):
        raise InvalidSource("only regular files and symlinks can be sent", name)
    if st.st_size > limits.max_file_bytes:
        raise InvalidSource(f"{st.st_size} bytes; the limit is {limits.max_file_bytes}", name)
    return TreeEntry(path=name, kind="file", sha256=sha256_file(path), size=st.st_size,
                     executable=bool(st.st_mode & 0o111))


def send(farm: BlobSink, local: LocalTree,
         progress: Callable[[int, int], None] | None = None) -> SendReport:
    """Upload the blobs the farm lacks, in packs, then the tree. `progress(sent, total)`
    sees file bytes."""
    missing = farm.missing_blobs(sorted(local.files)).missing
    sizes = {digest: local.files[digest].stat().st_size for digest in missing}
    total, sent = sum(sizes.values()), 0

    def upload(batch: list[str]) -> int:
        farm.put_pack(pack_bytes((digest, local.files[digest]) for digest in batch))
        return sum(sizes[digest] for digest in batch)

    with ThreadPoolExecutor(_UPLOADS) as pool:
        for size in pool.map(upload, _batches(missing, sizes)):
            sent += size
            if progress:
                progress(sent, total)
    status = farm.create_source(local.tree)
    return SendReport(status=status, blobs_sent=len(missing), bytes_sent=sent)
