"""The source archive format (a gzip'd tar of a crate) and the checks every reader applies.

The controller checks an upload before storing it and the worker checks again
before extracting, so an unsafe archive is refused with the member it concerns.
"""

from __future__ import annotations

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


def check_member(member: tarfile.TarInfo) -> str:
    """Refuse a member whose path or kind could escape or harm the build tree on its own;
    returns its path with any leading "./" removed. TreeCheck adds the checks that need
    the other members."""
    name = member.name
    if name.startswith("/") or "\\" in name:
        raise InvalidArchive("absolute or backslash paths are not allowed", name)
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidArchive("'..' path components are not allowed", name)
    if not parts:
        raise InvalidArchive("a member needs a name", name)
    if parts[0] in ("target", ".git"):
        raise InvalidArchive("target/ and .git/ are never part of a source upload", name)
    if member.issym():
        if member.linkname.startswith("/"):
            link = member.linkname
            raise InvalidArchive(f"symlink points outside the source tree ({link})", name)
    elif not (member.isfile() or member.isdir()):
        raise InvalidArchive("only regular files, directories and symlinks are allowed", name)
    return "/".join(parts)


class TreeCheck:
    """Checks members one by one and the tree they make together.

    Besides each member's own checks: a symlink must stay inside the tree, and no
    path may pass through a symlink (`here -> .` then `escape -> here/..` would
    otherwise leave the tree, whatever order the members come in).
    """

    def __init__(self) -> None:
        self._links: set[str] = set()
        self._members: set[str] = set()
        self._walked: set[str] = set()  # directories some symlink's target passes through

    def add(self, member: tarfile.TarInfo) -> None:
        name = check_member(member)
        for parent in _parents(name):
            if parent in self._links:
                raise InvalidArchive(f"the path goes through the symlink {parent}", member.name)
        if member.issym():
            walked = _walk_link(name, member.linkname, member.name)
            through = (walked | {name}) & self._links if walked else set()
            if through or name in self._walked or any(
                m.startswith(name + "/") for m in self._members
            ):
                raise InvalidArchive(
                    f"symlink {member.linkname} and another symlink lead through each other",
                    member.name,
                )
            self._links.add(name)
            self._walked |= walked
        self._members.add(name)


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _walk_link(name: str, link: str, shown: str) -> set[str]:
    """The directories a link's target steps through; InvalidArchive if it leaves the tree."""
    stack = name.split("/")[:-1]
    walked: set[str] = set()
    parts = [part for part in link.split("/") if part not in ("", ".")]
    for index, part in enumerate(parts):
        if part == "..":
            if not stack:
                raise InvalidArchive(f"symlink points outside the source tree ({link})", shown)
            stack.pop()
        else:
            stack.append(part)
            if index < len(parts) - 1:
                walked.add("/".join(stack))
    return walked


def _checked_members(tar: tarfile.TarFile, limits: ArchiveLimits) -> ArchiveSummary:
    files = total = 0
    tree = TreeCheck()
    for member in tar:
        tree.add(member)
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
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            tar.extractall(dest, filter="data")
    except tarfile.FilterError as exc:
        raise InvalidArchive(f"refused while extracting: {exc}") from exc
    return summary
