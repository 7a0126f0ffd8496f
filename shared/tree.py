"""Source trees: a crate as a list of entries (path, kind, sha256), its files stored
once each as content-addressed blobs.

The client sends the list, the farm answers which blobs it lacks, and only those
travel. Every reader checks the tree the same way (`check_tree`), so an unsafe
tree is refused with the path it concerns, on the controller before it is stored
and on the worker before it is built.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from crossfarm.shared.errors import InvalidSource
from crossfarm.shared.wire import SourceLimits, SourceTree, TreeEntry

_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class TreeLimits:
    """Upper bounds for one source tree."""

    max_files: int = 20_000
    max_file_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 512 * 1024 * 1024

    @classmethod
    def of(cls, wire: SourceLimits) -> TreeLimits:
        return cls(max_files=wire.max_files, max_file_bytes=wire.max_file_bytes,
                   max_total_bytes=wire.max_total_bytes)

    def to_wire(self) -> SourceLimits:
        return SourceLimits(max_files=self.max_files, max_file_bytes=self.max_file_bytes,
                            max_total_bytes=self.max_total_bytes)


@dataclass(frozen=True)
class TreeSummary:
    files: int
    total_bytes: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fileobj:
        for block in iter(lambda: fileobj.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(tree: SourceTree) -> str:
    """The tree's name: the sha256 of its canonical JSON (entries sorted by path)."""
    canonical = SourceTree(entries=sorted(tree.entries, key=lambda e: e.path))
    return hashlib.sha256(canonical.model_dump_json().encode()).hexdigest()


def check_path(path: str) -> None:
    """Refuse a path that could escape or clutter the build tree on its own."""
    if not path or path.startswith("/") or "\\" in path:
        raise InvalidSource("paths must be relative, non-empty and use '/'", path)
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidSource("empty, '.' and '..' path components are not allowed", path)
    if parts[0] in ("target", ".git"):
        raise InvalidSource("target/ and .git/ are never part of a source upload", path)
    if any(ord(char) < 32 for char in path):
        raise InvalidSource("control characters are not allowed in paths", path)


class TreeCheck:
    """Checks entries one by one and the tree they make together.

    Besides each path's own checks: a symlink must stay inside the tree, and no
    path may pass through a symlink (`here -> .` then `escape -> here/..` would
    otherwise leave the tree, whatever order the entries come in).
    """

    def __init__(self) -> None:
        self._links: set[str] = set()
        self._paths: set[str] = set()
        self._walked: set[str] = set()  # directories some symlink's target passes through

    def add(self, entry: TreeEntry) -> None:
        name = entry.path
        check_path(name)
        if name in self._paths:
            raise InvalidSource("the path appears twice", name)
        for parent in _parents(name):
            if parent in self._links:
                raise InvalidSource(f"the path goes through the symlink {parent}", name)
        if entry.kind == "symlink":
            target = entry.target or ""
            walked = _walk_link(name, target)
            if (walked & self._links) or name in self._walked or any(
                path.startswith(name + "/") for path in self._paths
            ):
                raise InvalidSource(
                    f"symlink -> {target} and another symlink lead through each other", name
                )
            self._links.add(name)
            self._walked |= walked
        self._paths.add(name)


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _walk_link(name: str, link: str) -> set[str]:
    """The directories a link's target steps through; InvalidSource if it leaves the tree."""
    if not link or link.startswith("/"):
        raise InvalidSource(f"symlink points outside the source tree ({link!r})", name)
    stack = name.split("/")[:-1]
    walked: set[str] = set()
    parts = [part for part in link.split("/") if part not in ("", ".")]
    for index, part in enumerate(parts):
        if part == "..":
            if not stack:
                raise InvalidSource(f"symlink points outside the source tree ({link})", name)
            stack.pop()
        else:
            stack.append(part)
            if index < len(parts) - 1:
                walked.add("/".join(stack))
    return walked


def check_tree(tree: SourceTree, limits: TreeLimits) -> TreeSummary:
    """Check every entry and the limits; returns the file count and total size."""
    if not tree.entries:
        raise InvalidSource("the source tree is empty")
    if len(tree.entries) > limits.max_files:
        raise InvalidSource(f"{len(tree.entries)} files; the limit is {limits.max_files}")
    check = TreeCheck()
    total = 0
    for entry in tree.entries:
        check.add(entry)
        if entry.size > limits.max_file_bytes:
            raise InvalidSource(
                f"file is {entry.size} bytes; the limit is {limits.max_file_bytes}", entry.path
            )
        total += entry.size
        if total > limits.max_total_bytes:
            raise InvalidSource(f"the source tree is over {limits.max_total_bytes} bytes")
    return TreeSummary(files=len(tree.entries), total_bytes=total)


def file_digests(tree: SourceTree) -> list[str]:
    """The distinct blob digests a tree's files need, in a stable order."""
    return sorted({entry.sha256 for entry in tree.entries if entry.sha256})


#: A pack is a gzip'd tar whose members are blobs named by their sha256: many small
#: files travel in one request and are stored as one object.
PACK_MEMBER_LIMIT = 10_000


def pack_bytes(blobs: Iterable[tuple[str, bytes | Path]]) -> bytes:
    """A pack of the given (sha256, bytes or local file) blobs."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=6) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for digest, blob in blobs:
            data = blob.read_bytes() if isinstance(blob, Path) else blob
            info = tarfile.TarInfo(digest)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def read_pack(data: bytes, limits: TreeLimits) -> Iterator[tuple[str, bytes]]:
    """Each (sha256, bytes) of a pack, after checking the name, kind, size and digest."""
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for count, member in enumerate(tar, start=1):
                if count > PACK_MEMBER_LIMIT:
                    raise InvalidSource(f"a pack holds at most {PACK_MEMBER_LIMIT} blobs")
                if not member.isfile() or not _DIGEST.fullmatch(member.name):
                    raise InvalidSource("pack members are regular files named by sha256",
                                        member.name)
                if member.size > limits.max_file_bytes:
                    raise InvalidSource(f"blob is {member.size} bytes; the limit is "
                                        f"{limits.max_file_bytes}", member.name)
                total += member.size
                if total > limits.max_total_bytes:
                    raise InvalidSource(f"the pack is over {limits.max_total_bytes} bytes")
                source = tar.extractfile(member)
                blob = source.read() if source else b""
                if hashlib.sha256(blob).hexdigest() != member.name:
                    raise InvalidSource("the blob's bytes do not match its name", member.name)
                yield member.name, blob
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise InvalidSource(f"not a readable pack (gzip'd tar): {exc}") from exc
