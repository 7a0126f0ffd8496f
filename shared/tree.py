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
import tomllib
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from crossfarm.shared.errors import InvalidSource, excerpt
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


#: Bounds of Linux file systems (NAME_MAX, PATH_MAX): a longer path fails in the build.
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096


def check_path(path: str) -> None:
    """Refuse a path that could escape or clutter the build tree on its own."""
    if not path or path.startswith("/") or "\\" in path:
        raise InvalidSource("paths must be relative, non-empty and use '/'", path)
    # Characters that do not show as themselves (controls C0, DEL and C1; format
    # characters such as bidi overrides and isolates, zero-width joiners, the BOM; lone
    # surrogates; separators other than the space): a path holding one can read as
    # another in a listing or a review.
    if not path.isprintable():
        hidden = next(char for char in path if not char.isprintable())
        raise InvalidSource(f"control characters, format characters and bidi controls (here "
                            f"U+{ord(hidden):04X}) are not allowed in paths", path)
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidSource("empty, '.' and '..' path components are not allowed", path)
    if parts[0] in ("target", ".git"):
        raise InvalidSource("target/ and .git/ are never part of a source upload", path)
    if len(path.encode()) > MAX_PATH_BYTES:
        raise InvalidSource(f"the path is over {MAX_PATH_BYTES} bytes", path)
    if any(len(part.encode()) > MAX_COMPONENT_BYTES for part in parts):
        raise InvalidSource(f"a path component is over {MAX_COMPONENT_BYTES} bytes", path)


class TreeCheck:
    """Checks entries one by one and the tree they make together.

    Besides each path's own checks: a symlink must stay inside the tree, and no
    path may pass through a symlink (`here -> .` then `escape -> here/..` would
    otherwise leave the tree, whatever order the entries come in); no path is both a
    file and a directory (`f` and `f/g`: one would silently replace the other). Names
    that differ only in case are both kept: builds run on Linux, whose file systems
    tell them apart, and crates that hold such pairs build there.
    """

    def __init__(self) -> None:
        self._links: set[str] = set()
        self._paths: set[str] = set()
        self._dirs: set[str] = set()  # every parent directory of a path seen
        self._walked: set[str] = set()  # directories some symlink's target passes through

    def add(self, entry: TreeEntry) -> None:
        name = entry.path
        check_path(name)
        if name in self._paths:
            raise InvalidSource("the path appears twice", name)
        parents = _parents(name)
        for parent in parents:
            if parent in self._links:
                raise InvalidSource(f"the path goes through the symlink {excerpt(parent)}",
                                    name)
            if parent in self._paths:
                raise InvalidSource(f"{excerpt(parent)} is a file, so it cannot be a directory",
                                    name)
        if name in self._dirs and entry.kind == "file":
            raise InvalidSource("the path is a file and also a directory of other paths", name)
        if entry.kind == "symlink":
            target = entry.target or ""
            if not target.isprintable():
                raise InvalidSource("control characters, format characters and bidi controls "
                                    "are not allowed in symlink targets", name)
            walked = _walk_link(name, target)
            if (walked & self._links) or name in self._walked or name in self._dirs:
                raise InvalidSource(
                    f"symlink -> {target} and another symlink lead through each other", name
                )
            self._links.add(name)
            self._walked |= walked
        self._paths.add(name)
        self._dirs.update(parents)


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


def check_sizes(tree: SourceTree, stored: dict[str, int]) -> None:
    """Refuse a file whose declared size is not its blob's (`stored`: digest -> size):
    smaller would silently cut the file in the build, larger fail it late."""
    for entry in tree.entries:
        actual = stored.get(entry.sha256 or "")
        if entry.kind == "file" and actual is not None and actual != entry.size:
            raise InvalidSource(f"declared {entry.size} bytes, but its blob "
                                f"{(entry.sha256 or '')[:12]}… holds {actual}", entry.path)


def project_of(tree: SourceTree, read: Callable[[str], bytes]) -> str:
    """The project a tree is, for warm target dirs: the package names of its manifests
    (`read` gives a file's bytes by its sha256), which a one-line change keeps; the
    manifests' paths if none names a package. The CLI and the worker both say it."""
    names: set[str] = set()
    paths = []
    for entry in tree.entries:
        if entry.kind != "file" or entry.path.rsplit("/", 1)[-1] != "Cargo.toml":
            continue
        paths.append(entry.path)
        with suppress(ValueError, UnicodeDecodeError, AttributeError):
            package = tomllib.loads(read(entry.sha256 or "").decode()).get("package", {})
            if isinstance(package.get("name"), str):
                names.add(package["name"])
    text = ",".join(sorted(names)) if names else "paths:" + ",".join(sorted(paths))
    return text[:200]  # BuildRequest.project's limit


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


#: Extended tar headers (GNU long names and links, PAX records) are read whole before
#: the member they describe; a pack's members never need more than a few hundred bytes.
MAX_EXTENDED_HEADER_BYTES = 4096
_BLOCK = 512
_KINDS = {b"1": "a hard link", b"2": "a symlink", b"3": "a character device",
          b"4": "a block device", b"5": "a directory", b"6": "a FIFO"}


def read_pack(data: bytes | IO[bytes], limits: TreeLimits) -> Iterator[tuple[str, bytes]]:
    """Each (sha256, bytes) of a pack, after checking the name, kind, size and digest.

    The tar is walked header by header as it decompresses, not by tarfile, which reads
    an extended header into memory at whatever size it declares: every size is checked
    before a byte of what it sizes is read, so memory and decompressed bytes stay within
    the limits whatever the pack claims."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with gzip.GzipFile(fileobj=source, mode="rb") as stream:
            yield from _PackReader(stream, limits).blobs()
    except (EOFError, OSError, zlib.error) as exc:
        raise InvalidSource(f"not a readable pack (gzip'd tar): {excerpt(str(exc))}") from exc


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _PackReader:
    def __init__(self, stream: _Readable, limits: TreeLimits) -> None:
        self._stream = stream
        self._limits = limits

    def blobs(self) -> Iterator[tuple[str, bytes]]:
        members = total = 0
        name: str | None = None  # from a GNU long-name or PAX header, for the next member
        size: int | None = None  # from a PAX header
        extended = 0
        while (header := self._read(_BLOCK, at_end_ok=True)) and header != bytes(_BLOCK):
            kind, own_name, own_size = _header(header)
            if kind in (b"L", b"K", b"x", b"g"):
                extended += 1
                if extended > 4:
                    raise InvalidSource("a pack member has more than 4 extended headers")
                if own_size > MAX_EXTENDED_HEADER_BYTES:
                    raise InvalidSource(f"an extended tar header declares {own_size} bytes; "
                                        f"packs allow at most {MAX_EXTENDED_HEADER_BYTES}")
                record = self._member(own_size)
                if kind == b"L":
                    name = _text(record.split(b"\0", 1)[0])
                elif kind == b"x":
                    name, size = _pax(record, name, size)
                continue
            name, size, extended = (own_name if name is None else name,
                                    own_size if size is None else size, 0)
            members += 1
            if members > PACK_MEMBER_LIMIT:
                raise InvalidSource(f"a pack holds at most {PACK_MEMBER_LIMIT} blobs")
            total += self._check_member(kind, name, size, total)
            blob = self._member(size)
            if hashlib.sha256(blob).hexdigest() != name:
                raise InvalidSource("the blob's bytes do not match its name", name)
            yield name, blob
            name = size = None

    def _check_member(self, kind: bytes, name: str, size: int, total: int) -> int:
        if kind not in (b"0", b"\0"):
            what = _KINDS.get(kind, f"an entry of tar type {excerpt(_text(kind))!r}")
            raise InvalidSource(f"pack members are regular files named by sha256, not {what}",
                                name)
        if not _DIGEST.fullmatch(name):
            raise InvalidSource("pack members are regular files named by sha256; this name "
                                "is not one", name)
        if size > self._limits.max_file_bytes:
            raise InvalidSource(f"blob is {size} bytes; the limit is "
                                f"{self._limits.max_file_bytes}", name)
        if total + size > self._limits.max_total_bytes:
            raise InvalidSource(f"the pack is over {self._limits.max_total_bytes} bytes")
        return size

    def _member(self, size: int) -> bytes:
        """A member's bytes, and the padding after them skipped."""
        data = self._read(size)
        self._read(-size % _BLOCK)
        return data

    def _read(self, size: int, at_end_ok: bool = False) -> bytes:
        chunks, left = [], size
        while left:
            chunk = self._stream.read(min(left, 1 << 20))
            if not chunk:
                if at_end_ok and left == size:
                    return b""
                raise InvalidSource("the pack ends in the middle of a member")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)


def _header(block: bytes) -> tuple[bytes, str, int]:
    """A tar header's type, name and size, after its checksum."""
    stored = _octal(block[148:156], "checksum")
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != unsigned:
        raise InvalidSource("not a readable pack (gzip'd tar): a header's checksum is wrong")
    name = block[:100].split(b"\0", 1)[0]
    if block[257:263] == b"ustar\0" and block[345] != 0:
        name = block[345:500].split(b"\0", 1)[0] + b"/" + name
    field = block[124:136]
    if field[0] & 0x80:  # base-256, as GNU tar writes sizes over 8 GiB and negatives
        if field[0] & 0x40:
            raise InvalidSource("a pack member declares a negative size")
        size = int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    else:
        size = _octal(field, "size")
    return block[156:157], _text(name), size


def _octal(field: bytes, what: str) -> int:
    digits = field.replace(b"\0", b" ").strip()
    if not digits:
        return 0
    if not all(48 <= byte <= 55 for byte in digits):
        raise InvalidSource(f"a pack member's tar header has a malformed {what} field "
                            f"({excerpt(_text(digits))})")
    return int(digits, 8)


def _pax(record: bytes, name: str | None, size: int | None) -> tuple[str | None, int | None]:
    """The path and size a PAX header sets for the next member (other keys do not
    matter to a blob); each record is `<length> <key>=<value>\\n`."""
    at = 0
    while at < len(record):
        length_text, space, _ = record[at:at + 12].partition(b" ")
        if not space or not length_text.isdigit():
            raise InvalidSource("a pack member's PAX header is malformed")
        end = at + int(length_text)
        key, equals, value = record[at + len(length_text) + 1:end].partition(b"=")
        if not equals or end > len(record) or not value.endswith(b"\n"):
            raise InvalidSource("a pack member's PAX header is malformed")
        value = value[:-1]
        if key == b"path":
            name = _text(value)
        elif key == b"size":
            if not value.isdigit():
                raise InvalidSource(f"a pack member's PAX size is not a size "
                                    f"({excerpt(_text(value))})")
            size = int(value)
        at = end
    return name, size


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")
