"""The sha256 of the artifacts the CLI put in a crate's target/, remembered by their stat,
so an unchanged 50 MB binary is not read again to learn that it is already the artifact
a build made (each no-op build of a crate asks exactly that).

A remembered digest is used only while the file's size, mtime, ctime, inode and device
are all what they were when it was recorded. Any write, rename or chmod sets ctime,
which no user call can set back, so a changed file is hashed again. As git does for its
"racily clean" entries, a file the CLI hashed is remembered only when its ctime is
older, by more than a clock tick, than the moment its hashing began: a write within the
same tick could otherwise leave every stat field as it was. A file the CLI has just
written itself is remembered with the stat it has after the rename that put it in
place. Anything unreadable about the index (missing, damaged, from another version)
means hashing, never trusting.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from pathlib import Path

#: The index, in the target/ dir it describes.
INDEX_NAME = ".crossfarm-sha256.json"
#: The index's own format; any other is ignored.
_VERSION = 1
#: Longer than any file system's timestamp granularity (ext4 with a coarse clock: one
#: tick, 1-10 ms; FAT: 2 s is not a target/ dir cargo supports).
RACY_NS = 100_000_000


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


class DigestIndex:
    """The remembered sha256 of files under one directory (a crate's target/)."""

    def __init__(self, base: Path, racy_ns: int = RACY_NS) -> None:
        self.base = base
        self._racy_ns = racy_ns
        self._path = base / INDEX_NAME
        self._entries: dict[str, list[object]] = {}
        self._changed = False
        with contextlib.suppress(OSError, ValueError):
            if not self._path.is_symlink():
                document = json.loads(self._path.read_text())
                if isinstance(document, dict) and document.get("version") == _VERSION:
                    entries = document.get("files")
                    self._entries = entries if isinstance(entries, dict) else {}

    def sha256(self, path: Path) -> str | None:
        """The sha256 of the regular file at `path` (not followed through a symlink), or
        None if there is none there; from the index while the file is unchanged."""
        try:
            before = path.lstat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(before.st_mode):
            return None
        key = self._key(path)
        entry = self._entries.get(key) if key is not None else None
        if (isinstance(entry, list) and len(entry) == 6
                and entry[:5] == _stamp(before) and isinstance(entry[5], str)):
            return entry[5]
        started = time.time_ns()
        digest = sha256_of(path)
        after = path.lstat()
        if (key is not None and _stamp(after) == _stamp(before)
                and after.st_ctime_ns < started - self._racy_ns):
            self._put(key, after, digest)
        return digest

    def wrote(self, path: Path, digest: str) -> None:
        """Remember the sha256 of a file the CLI has just put in place itself."""
        key = self._key(path)
        with contextlib.suppress(OSError):
            st = path.lstat()
            if key is not None and stat.S_ISREG(st.st_mode):
                self._put(key, st, digest)

    def save(self) -> None:
        """Write the index if it changed (atomically; a failure only costs a hash later)."""
        if not self._changed:
            return
        document = {"version": _VERSION, "files": self._entries}
        partial = self._path.with_name(f"{INDEX_NAME}.{os.getpid()}.partial")
        with contextlib.suppress(OSError):
            if self._path.is_symlink():
                return
            with partial.open("x") as out:
                json.dump(document, out)
            partial.replace(self._path)
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)

    def _key(self, path: Path) -> str | None:
        try:
            return path.relative_to(self.base).as_posix()
        except ValueError:
            return None

    def _put(self, key: str, st: os.stat_result, digest: str) -> None:
        self._entries[key] = [*_stamp(st), digest]
        self._changed = True

