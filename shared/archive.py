"""The source archive format (a gzip'd tar of a crate) and the checks every reader applies.

The controller checks an upload before storing it and the worker checks again
before extracting, so an unsafe archive is refused with the member it concerns.
"""

from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from crossfarm.shared.errors import InvalidArchive


@dataclass(frozen=True)
class ArchiveLimits:
    """Upper bounds for one source tree."""

    max_files: int = 20_000
    max_file_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 512 * 1024 * 1024


@dataclass(frozen=True)
class ArchiveSummary:
    files: int
    total_bytes: int


def check_member(member: tarfile.TarInfo) -> None:
    """Refuse a member whose path or kind could escape or harm the build tree."""
    name = member.name
    if name.startswith("/") or "\\" in name:
        raise InvalidArchive("absolute or backslash paths are not allowed", name)
    parts = name.split("/")
    if ".." in parts:
        raise InvalidArchive("'..' path components are not allowed", name)
    if parts[0] in ("target", ".git"):
        raise InvalidArchive("target/ and .git/ are never part of a source upload", name)
    if member.issym():
        link = member.linkname
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), link))
        if link.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise InvalidArchive(f"symlink points outside the source tree ({link})", name)
    elif not (member.isfile() or member.isdir()):
        raise InvalidArchive("only regular files, directories and symlinks are allowed", name)


def _checked_members(tar: tarfile.TarFile, limits: ArchiveLimits) -> ArchiveSummary:
    files = total = 0
    for member in tar:
        check_member(member)
        files += 1
        total += member.size
        if member.size > limits.max_file_bytes:
            raise InvalidArchive(
                f"file is {member.size} bytes; the limit is {limits.max_file_bytes}", member.name
            )
        if files > limits.max_files:
            raise InvalidArchive(f"more than {limits.max_files} files in the source tree")
        if total > limits.max_total_bytes:
            raise InvalidArchive(f"source tree is over {limits.max_total_bytes} bytes")
    return ArchiveSummary(files=files, total_bytes=total)


def inspect_archive(fileobj: IO[bytes], limits: ArchiveLimits) -> ArchiveSummary:
    """Check every member of an archive without extracting it."""
    try:
        with tarfile.open(fileobj=fileobj, mode="r:gz") as tar:
            summary = _checked_members(tar, limits)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidArchive(f"not a readable tar.gz archive: {exc}") from exc
    if summary.files == 0:
        raise InvalidArchive("the archive is empty")
    return summary


def extract_archive(path: Path, dest: Path, limits: ArchiveLimits) -> ArchiveSummary:
    """Check, then extract an archive into `dest` (tarfile's 'data' filter guards again)."""
    with path.open("rb") as fileobj:
        summary = inspect_archive(fileobj, limits)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
    return summary
