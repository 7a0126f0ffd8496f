"""Pack a crate into a reproducible source archive.

Files are what git would track: tracked plus untracked-but-not-ignored, so
.gitignore is honoured and target/ never travels. A directory that is not a
git checkout (or sits in an ignored part of one) is listed with a throwaway git
index, so its .gitignore counts too.
The archive is byte-for-byte the same for the same tree (sorted names, zero
times and owners), so an unchanged tree has the same digest and is not re-sent.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from crossfarm.shared.archive import ArchiveLimits, TreeCheck
from crossfarm.shared.errors import InvalidArchive


@dataclass(frozen=True)
class Packed:
    data: bytes
    digest: str
    files: int
    total_bytes: int


def list_files(root: Path) -> list[str]:
    """The crate's files, relative to `root`, as git sees them (ignores honoured)."""
    root = root.resolve()
    args = ["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."]
    if _tracked_by_git(root):
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True)
    else:
        with tempfile.TemporaryDirectory() as gitdir:
            env = {**os.environ, "GIT_DIR": gitdir, "GIT_WORK_TREE": str(root)}
            subprocess.run(["git", "init", "-q"], env=env, check=True, capture_output=True)
            out = subprocess.run(["git", "-C", str(root), *args], env=env,
                                 capture_output=True, check=True)
    names = {name for name in out.stdout.decode().split("\0") if name}
    return sorted(n for n in names if n.split("/")[0] not in ("target", ".git"))


def _tracked_by_git(root: Path) -> bool:
    """Inside a git work tree, and not in a part of it that the tree ignores."""
    inside = subprocess.run(["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
                            capture_output=True, text=True)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return False
    ignored = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", "."],
                             capture_output=True)
    return ignored.returncode != 0


def pack(root: Path, limits: ArchiveLimits | None = None) -> Packed:
    """A gzip'd tar of the crate at `root`; refuses unsafe entries before anything is sent."""
    limits = limits or ArchiveLimits()
    buffer = io.BytesIO()
    total = 0
    names = [n for n in list_files(root) if (root / n).exists() or (root / n).is_symlink()]
    if len(names) > limits.max_files:
        raise InvalidArchive(f"{len(names)} files; the limit is {limits.max_files}")
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=6) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tree = TreeCheck()
        for name in names:
            info = _entry(root, name)
            tree.add(info)
            total += info.size
            if info.size > limits.max_file_bytes:
                raise InvalidArchive(
                    f"{info.size} bytes; the limit is {limits.max_file_bytes}", name
                )
            if total > limits.max_total_bytes:
                raise InvalidArchive(f"the tree is over {limits.max_total_bytes} bytes")
            if info.isfile():
                with (root / name).open("rb") as fileobj:
                    tar.addfile(info, fileobj)
            else:
                tar.addfile(info)
    data = buffer.getvalue()
    return Packed(data=data, digest=hashlib.sha256(data).hexdigest(), files=len(names),
                  total_bytes=total)


def _entry(root: Path, name: str) -> tarfile.TarInfo:
    path = root / name
    st = path.lstat()
    info = tarfile.TarInfo(name)
    info.mtime = 0
    if stat.S_ISLNK(st.st_mode):
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(path), 0o777
    elif stat.S_ISREG(st.st_mode):
        info.size = st.st_size
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
    else:
        raise InvalidArchive("only regular files and symlinks can be sent", name)
    return info
