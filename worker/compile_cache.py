"""The compile cache (CROSSFARM_COMPILE_CACHE_BYTES > 0): sccache as cargo's RUSTC_WRAPPER,
its local disk cache kept in the farm's object store, one copy per tenant, project,
target, profile and builder image id (keys.CompileCacheKey), so a new or scaled-out
worker starts as warm as any other:

    store      compile-cache/<tenant>/<scope>/cache.tar       regular files only
               compile-cache/<tenant>/<scope>/manifest.json   its sha256, size, files;
                                                              written last, by the worker
    container  /work/sccache = SCCACHE_DIR, in the job's own volume: gone with the job

    restore: manifest → archive (its sha256 and size, then every member checked)
    → put into the job volume → cargo with RUSTC_WRAPPER=sccache → sccache's stats on
    one marker line → after a successful build only: the dir's archive out of the
    container, checked member by member, stored if its files changed, manifest last

The build container never reaches the store (no network, no credentials): the worker
moves the bytes. What a build leaves in its cache dir is hostile input (its build
scripts and proc macros can write there): only regular files under plain names are
taken, each and all of them bounded; a symlink, hard link, device, stray name, or a
file past the budget refuses the whole dir, and the store keeps the copy it had. A
build can still forge cache *entries* (the bytes a later compile of its project will
take for an rlib): that spoils its own tenant's project only, as a warm target dir can
(docs/security.md).

Each job gets its own copy, so two builds of one project never write one dir; the last
to finish is the copy the store keeps.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crossfarm.shared.errors import NotFound, StorageError
from crossfarm.shared.keys import CompileCacheKey
from crossfarm.shared.storage import ObjectStore
from crossfarm.shared.wire import CompileCacheUse
from crossfarm.worker.cargo import WORK
from crossfarm.worker.images import BUILD_UID

#: The cache dir's name in the job volume, and SCCACHE_DIR in the container.
ROOT = "sccache"
CACHE_DIR = f"{WORK}/{ROOT}"
#: The first word of the lines the build step's wrapper prints about sccache (on stdout,
#: after cargo ended); the worker reads them and keeps them out of the log.
MARKER = "crossfarm-compile-cache:"
#: The build step's command, run by `sh -c` before cargo's own: sccache's server is
#: started if the image has it (the 1.63 builder has not: the build goes on without),
#: and its stats are printed once cargo has ended, whatever its exit code.
_WRAPPER = f"""\
on=
if ! command -v sccache >/dev/null 2>&1; then
  echo "{MARKER} missing"
elif out=$(sccache --start-server 2>&1); then
  export RUSTC_WRAPPER=sccache
  on=1
else
  echo "$out" >&2
  echo "{MARKER} no-server"
fi
"$@"
code=$?
if [ -n "$on" ]; then
  echo "{MARKER} $(sccache --show-stats --stats-format json 2>/dev/null | tr -d '\\n')"
  sccache --stop-server >/dev/null 2>&1
fi
exit $code
"""
#: At most this many files in one project's cache (sccache writes one per compiled
#: crate or C file, and a few more in its preprocessor cache).
MAX_FILES = 20_000
#: A name in the cache dir: sccache's own are hex digests and "preprocessor".
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_MAX_DEPTH = 8
#: What a tar header (and its PAX record, for a long name) adds to each member.
_HEADER_BYTES = 2048


class Refused(Exception):
    """A cache dir (or a stored copy of one) that is not what sccache writes; the message
    says which member and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Limits:
    """How big a project's cache may be: the files' bytes together and their count."""

    max_bytes: int
    max_files: int = MAX_FILES

    @property
    def max_archive_bytes(self) -> int:
        """The biggest archive those files can make, headers and directories included."""
        return self.max_bytes + _HEADER_BYTES * (2 * self.max_files + 2)

    @property
    def sccache_bytes(self) -> int:
        """What sccache is told to keep under (SCCACHE_CACHE_SIZE): it evicts after each
        write, so a little room is left below the hard limit."""
        return self.max_bytes * 9 // 10


@dataclass(frozen=True)
class Contents:
    """What a checked cache archive holds."""

    files: int
    bytes: int
    #: over each file's path and sha256, in path order: equal for the same files, whatever
    #: their order in the archive, their times or owners
    digest: str


class StoredCache(BaseModel):
    """The manifest of a stored cache archive, written by the worker after the archive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, Field(ge=0)]
    files: Annotated[int, Field(ge=0)]
    content: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def _parts(name: str) -> list[str]:
    """The components of a member's name under ROOT; Refused for any other name."""
    parts = name.removesuffix("/").split("/")
    if parts[0] != ROOT:
        raise Refused(f"{_shown(name)} is not inside {ROOT}/")
    if len(parts) > _MAX_DEPTH + 1:
        raise Refused(f"{_shown(name)} is nested deeper than {_MAX_DEPTH} levels")
    for part in parts[1:]:
        if not _NAME.fullmatch(part) or part in (".", ".."):
            raise Refused(f"{_shown(name)} is not a plain name (letters, digits, '.', '_', "
                          "'-')")
    return parts


def _shown(name: str) -> str:
    return json.dumps(name[:200])


_KINDS: list[tuple[Callable[[tarfile.TarInfo], bool], str]] = [
    (tarfile.TarInfo.issym, "a symlink"), (tarfile.TarInfo.islnk, "a hard link"),
    (tarfile.TarInfo.ischr, "a character device"), (tarfile.TarInfo.isblk, "a block device"),
    (tarfile.TarInfo.isfifo, "a fifo"), (tarfile.TarInfo.issparse, "a sparse file")]


def _kind(member: tarfile.TarInfo) -> str:
    return next((kind for test, kind in _KINDS if test(member)), "not a regular file")


def check_archive(source: IO[bytes], limits: Limits, out: IO[bytes] | None = None
                  ) -> Contents:
    """Read the tar stream of a cache dir (as the engine gives it: the dir itself first,
    as ROOT) and refuse it (Refused) at the first member that is neither a regular file
    nor a directory under a plain name, or that takes it past `limits`, before that
    member's bytes are read. With `out`, write what it holds as the tar a build takes:
    the files (with their times), the directories above them, all the build user's."""
    listing: list[tuple[str, str]] = []
    total = 0
    made: set[str] = set()
    writing: AbstractContextManager[tarfile.TarFile | None] = (
        tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        if out is not None else nullcontext())
    with tarfile.open(fileobj=source, mode="r|") as tar, writing as writer:
        if writer is not None:
            _directory(writer, ROOT, made)
        for member in tar:
            parts = _parts(member.name)
            if member.isdir():
                continue  # made for the files in it, as the build user's
            if not member.isreg() or member.issparse():
                raise Refused(f"{_shown(member.name)} is {_kind(member)}: only regular "
                              "files are taken")
            if len(listing) >= limits.max_files:
                raise Refused(f"more than {limits.max_files} files")
            if member.size > limits.max_bytes - total:
                raise Refused(f"{_shown(member.name)} ({member.size} bytes) takes the cache "
                              f"past its budget of {limits.max_bytes} bytes "
                              "(CROSSFARM_COMPILE_CACHE_BYTES)")
            total += member.size
            name = "/".join(parts)
            digest = _copy(tar, member, name, writer, made)
            listing.append((name, digest))
    listing.sort()
    return Contents(files=len(listing), bytes=total,
                    digest=hashlib.sha256(json.dumps(listing).encode()).hexdigest())


def _directory(writer: tarfile.TarFile, name: str, made: set[str]) -> None:
    if name in made:
        return
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, BUILD_UID, BUILD_UID
    writer.addfile(info)
    made.add(name)


def _copy(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str,
          writer: tarfile.TarFile | None, made: set[str]) -> str:
    """One file's bytes, hashed, and copied to `writer` (if any); returns the sha256."""
    source = tar.extractfile(member)
    assert source is not None  # a regular file always has its bytes
    hashing = _Hashing(source)
    if writer is None:
        while hashing.read(1 << 20):
            pass
        return hashing.hexdigest()
    parts = name.split("/")
    for depth in range(2, len(parts)):
        _directory(writer, "/".join(parts[:depth]), made)
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uid, info.gid = member.size, 0o644, BUILD_UID, BUILD_UID
    # its time is kept: sccache evicts the least recently used entries by it
    info.mtime = min(max(int(member.mtime), 0), 2**33 - 1)
    writer.addfile(info, hashing)
    return hashing.hexdigest()


class _Hashing(io.RawIOBase):
    """A reader that hashes what passes through it."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        self._sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        self._sha.update(data)
        buffer[:len(data)] = data
        return len(data)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def empty_archive() -> IO[bytes]:
    """The tar of an empty cache dir, the build user's."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as writer:
        _directory(writer, ROOT, set())
    out.seek(0)
    return out


@dataclass
class Restored:
    """A project's cache as a build gets it: the tar to put into the job volume, what it
    holds (None: empty), and the sentence the log says of it."""

    tar: IO[bytes]
    contents: Contents | None
    said: str
    #: the manifest it was stored under (None: empty)
    manifest: StoredCache | None = None


def restore(storage: ObjectStore, key: CompileCacheKey, limits: Limits, scratch: Path
            ) -> Restored:
    """The stored cache of `key`, checked: the manifest, then the archive's size and
    sha256 against it, then every member as at upload. An empty one (saying why) when
    none is stored or the stored one fails a check; StorageError if the store fails."""
    try:
        stored = StoredCache.model_validate_json(storage.get_bytes(key.manifest()))
    except NotFound:
        return Restored(empty_archive(), None, "none stored yet: starting empty")
    except ValidationError:
        return Restored(empty_archive(), None, "its manifest is not one a worker writes: "
                        "starting empty")
    if stored.size > limits.max_archive_bytes:
        return Restored(empty_archive(), None, f"the stored copy is {stored.size} bytes, "
                        f"past this worker's budget: starting empty")
    fetched = scratch / "compile-cache-stored.tar"
    try:
        storage.download(key.archive(), fetched)
        if fetched.stat().st_size != stored.size or _sha256(fetched) != stored.sha256:
            # another build's copy replaced the archive between its manifest and this read
            return Restored(empty_archive(), None, "the stored copy does not match its "
                            "manifest (replaced meanwhile?): starting empty")
        tar = tempfile.TemporaryFile(dir=scratch)  # noqa: SIM115 - the Restored holds it
        try:
            with fetched.open("rb") as source:
                contents = check_archive(source, limits, tar)
        except (Refused, tarfile.TarError) as exc:
            tar.close()
            return Restored(empty_archive(), None, "the stored copy is refused "
                            f"({why_refused(exc)}): starting empty")
    except NotFound:  # its manifest, without the archive: a store that lost it
        return Restored(empty_archive(), None, "the stored copy is missing: starting empty")
    finally:
        fetched.unlink(missing_ok=True)
    tar.seek(0)
    return Restored(tar, contents, f"{contents.files} file(s), {contents.bytes} bytes "
                    "from the farm's store", stored)


@dataclass
class JobCache:
    """One build's compile cache: where it is stored, what the build started with, and
    what sccache said of it."""

    key: CompileCacheKey
    limits: Limits
    restored: Restored
    #: False: the store failed at restore, so this build's cache (which lacks what the
    #: store holds) is not stored over it
    store: bool = True
    stats: StatsReader = field(default_factory=lambda: StatsReader())


def open_cache(storage: ObjectStore, key: CompileCacheKey, limits: Limits, scratch: Path
               ) -> JobCache:
    """The cache a build starts with (see restore); an empty one if the store fails: the
    cache speeds a build up, it never fails one."""
    try:
        return JobCache(key, limits, restore(storage, key, limits, scratch))
    except StorageError as exc:
        return JobCache(key, limits, Restored(
            empty_archive(), None, f"the store failed ({exc.message}): starting empty; "
            "this build's cache will not be stored"), store=False)


def save(archive: Callable[[], AbstractContextManager[IO[bytes]]], storage: ObjectStore,
         key: CompileCacheKey, limits: Limits, scratch: Path, before: Restored | None
         ) -> str:
    """Check the cache dir a build left (`archive` streams it out of the container) and
    store it if its files differ from what the build started with (`before`); returns
    what the log says. Refused (or tarfile.TarError) when the dir is not what sccache
    writes: nothing is stored, the store keeps the copy it had. The manifest goes last:
    it is what publishes. An unchanged dir only has its manifest written again: its time
    is the copy's last use, which the controller's expiry goes by (controller/expiry.py)."""
    out = scratch / "compile-cache-new.tar"
    try:
        with archive() as stream, out.open("wb") as writing:
            contents = check_archive(stream, limits, writing)
        if (before is not None and before.manifest is not None and before.contents is not None
                and contents.digest == before.contents.digest):
            storage.put_bytes(key.manifest(), before.manifest.model_dump_json().encode(),
                              "application/json")
            return f"unchanged ({contents.files} file(s)): not stored again"
        sha256 = _sha256(out)
        storage.put_file(key.archive(), out, sha256)
        manifest = StoredCache(sha256=sha256, size=out.stat().st_size, files=contents.files,
                               content=contents.digest)
        storage.put_bytes(key.manifest(), manifest.model_dump_json().encode(),
                          "application/json")
    finally:
        out.unlink(missing_ok=True)
    return f"stored {contents.files} file(s), {contents.bytes} bytes"


def why_refused(exc: Exception) -> str:
    """The words for a refused cache dir (Refused, or a tarfile.TarError)."""
    return exc.message if isinstance(exc, Refused) else f"not a tar archive: {exc}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def build_command(command: list[str]) -> list[str]:
    """The build step's command with sccache around it (see _WRAPPER)."""
    return ["sh", "-c", _WRAPPER, "crossfarm-build", *command]


def build_env(limits: Limits) -> dict[str, str]:
    """sccache's settings in the build container: its cache in the job volume, its server
    on a unix socket in /tmp (no network there), never idle-stopped mid-build."""
    return {"SCCACHE_DIR": CACHE_DIR, "SCCACHE_CACHE_SIZE": str(limits.sccache_bytes),
            "SCCACHE_SERVER_UDS": "/tmp/crossfarm-sccache.sock", "SCCACHE_IDLE_TIMEOUT": "0"}


class StatsReader:
    """Reads the wrapper's marker lines from the build's stdout: sccache's stats, or why
    it did not run. The last line wins (build code printing one earlier is overruled)."""

    def __init__(self) -> None:
        self.use: CompileCacheUse | None = None
        #: why sccache did not run: "missing" from the image, or its server did not start
        self.off: str | None = None
        self.seen = False

    def feed(self, line: str) -> bool:
        """True if `line` was a marker line (not for the log)."""
        if not line.startswith(MARKER):
            return False
        self.seen = True
        rest = line[len(MARKER):].strip()
        if rest in ("missing", "no-server"):
            self.use, self.off = None, rest
            return True
        self.use, self.off = _stats(rest), None
        return True


def _stats(text: str) -> CompileCacheUse | None:
    """Hits and misses, every language together, from `sccache --show-stats
    --stats-format json`; None if the text is not that."""
    try:
        stats = json.loads(text)["stats"]
        counts = [sum(int(n) for n in stats[field]["counts"].values())
                  for field in ("cache_hits", "cache_misses")]
        return CompileCacheUse(hits=counts[0], misses=counts[1])
    except (ValueError, TypeError, KeyError, AttributeError, ValidationError):
        return None


def summary(use: CompileCacheUse) -> str:
    """The log's words for it: "N/M hits (P%)"."""
    calls = use.hits + use.misses
    rate = use.hit_rate
    return f"{use.hits}/{calls} hits" + ("" if rate is None else f" ({rate:.0%})")
