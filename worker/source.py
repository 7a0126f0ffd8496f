"""Fetch a build's source tree and its blobs, and turn them into the tar the builder
container receives.

Blobs are cached on the worker's disk under their sha256, so a file that did not
change since an earlier build on this worker is not downloaded again. The cache is
kept under a size budget by dropping the least recently used blobs.
"""

from __future__ import annotations

import fcntl
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from crossfarm.shared import keys
from crossfarm.shared.errors import StorageError
from crossfarm.shared.ids import SourceDigest
from crossfarm.shared.storage import ObjectStore
from crossfarm.shared.tree import (
    TreeLimits,
    check_tree,
    file_digests,
    read_pack,
    sha256_file,
    tree_digest,
)
from crossfarm.shared.wire import SourceTree

#: Parallel blob downloads: enough to hide per-request latency, few enough for a small host.
_DOWNLOADS = 8


def fetch_tree(storage: ObjectStore, digest: SourceDigest, limits: TreeLimits) -> SourceTree:
    """The tree a build names, checked again and matched against its digest."""
    tree = SourceTree.model_validate_json(storage.get_bytes(keys.tree_key(digest)))
    if tree_digest(tree) != digest:
        raise StorageError(f"stored tree {digest} does not match its digest", retryable=False)
    check_tree(tree, limits)
    return tree


def fetch_blobs(storage: ObjectStore, digest: SourceDigest, tree: SourceTree, cache: Path,
                limits: TreeLimits) -> int:
    """Make sure every blob of `tree` is in `cache`; returns how many were fetched.
    Blobs that came in a pack are fetched with their pack, one request per pack."""
    cache.mkdir(parents=True, exist_ok=True)
    wanted = []
    for blob in file_digests(tree):
        try:  # a cached blob this build uses is fresh again, for trim_cache
            os.utime(cache / blob)
        except FileNotFoundError:
            wanted.append(blob)
    if not wanted:
        return 0
    located: dict[str, str] = json.loads(storage.get_bytes(keys.locations_key(digest)))
    packs = sorted({located[d] for d in wanted if d in located})
    alone = [d for d in wanted if d not in located]

    def unpack(pack: str) -> None:
        for blob_digest, data in read_pack(storage.get_bytes(keys.pack_key(pack)), limits):
            _keep(cache, blob_digest, data)

    def download(digest: str) -> None:
        fd, partial = tempfile.mkstemp(dir=cache, prefix=".partial-")
        os.close(fd)
        try:
            storage.download(keys.blob_key(digest), Path(partial))
            if sha256_file(Path(partial)) != digest:
                raise StorageError(f"blob {digest} arrived with other bytes", retryable=False)
            os.replace(partial, cache / digest)
        finally:
            Path(partial).unlink(missing_ok=True)

    with ThreadPoolExecutor(_DOWNLOADS) as pool:
        list(pool.map(unpack, packs))
        list(pool.map(download, alone))
    return len(wanted)


def _keep(cache: Path, digest: str, data: bytes) -> None:
    """Write a verified blob into the cache atomically (readers never see half a file)."""
    if (cache / digest).is_file():
        return
    fd, partial = tempfile.mkstemp(dir=cache, prefix=".partial-")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(partial, cache / digest)


@dataclass(frozen=True)
class Cached:
    """One file in the blob cache."""

    name: str
    size: int
    used_at: float  # its mtime: when a build last fetched or used it


def to_evict(files: list[Cached], budget_bytes: int, keep_after: float) -> list[str]:
    """The files to delete so the cache fits in `budget_bytes`, least recently used
    first. Files used at or after `keep_after` are never chosen: recent builds' blobs are
    the likeliest to be wanted again. Half-written files (".partial-…") older than that
    are always chosen: their writer died."""
    old = [f for f in files if f.used_at < keep_after]
    partial = [f for f in old if f.name.startswith(".partial-")]
    chosen = [f.name for f in partial]
    total = sum(f.size for f in files) - sum(f.size for f in partial)
    blobs = (f for f in old if not f.name.startswith(".partial-"))
    for cached in sorted(blobs, key=lambda f: (f.used_at, f.name)):
        if total <= budget_bytes:
            break
        chosen.append(cached.name)
        total -= cached.size
    return chosen


#: The lock file in the cache folder (see cache_lock); never a blob.
_LOCK = ".lock"


@contextmanager
def cache_lock(cache: Path, exclusive: bool = False) -> Iterator[bool]:
    """Builds of this worker share the cache: each holds a shared lock from the moment
    it checks which blobs are cached until its tar is made; trimming needs the lock
    alone and skips its turn (yields False) rather than wait while a build reads."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / _LOCK).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def trim_cache(cache: Path, budget_bytes: int, keep_s: float) -> tuple[int, int]:
    """Delete the least recently used blobs until the cache fits in `budget_bytes`;
    returns (files removed, bytes freed). Call it holding cache_lock(exclusive=True)."""
    files = []
    for entry in os.scandir(cache):
        if entry.name == _LOCK:
            continue
        with suppress(FileNotFoundError):  # another build may trim at the same time
            info = entry.stat(follow_symlinks=False)
            files.append(Cached(entry.name, info.st_size, info.st_mtime))
    removed = freed = 0
    sizes = {f.name: f.size for f in files}
    for name in to_evict(files, budget_bytes, time.time() - keep_s):
        with suppress(FileNotFoundError):
            (cache / name).unlink()
            removed, freed = removed + 1, freed + sizes[name]
    return removed, freed


def container_tar(tree: SourceTree, cache: Path, prefix: str, uid: int,
                  keep: Callable[[str], bool] | None = None,
                  mtimes: Mapping[str, float] | None = None) -> IO[bytes]:
    """The tree under `prefix`, owned by `uid`, as an uncompressed tar (only the entries
    whose path `keep` accepts, if given). Files' mtimes are 0 unless `mtimes` gives
    them (a warm build's, see worker/warm.py): cargo compares them with its outputs'.

    The Docker engine keeps a tar's uid/gid when copying into a container, so the
    non-root build user owns its tree without a chown step as root.
    """
    out = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories: set[str] = set()
        for entry in sorted(tree.entries, key=lambda e: e.path):
            if keep is not None and not keep(entry.path):
                continue
            parts = f"{prefix}/{entry.path}".split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in directories:
                    directories.add(directory)
                    tar.addfile(_info(directory, tarfile.DIRTYPE, 0o755, uid))
            name = f"{prefix}/{entry.path}"
            if entry.kind == "symlink":
                info = _info(name, tarfile.SYMTYPE, 0o777, uid)
                info.linkname = entry.target or ""
                tar.addfile(info)
                continue
            info = _info(name, tarfile.REGTYPE, 0o755 if entry.executable else 0o644, uid)
            info.size = entry.size
            if mtimes is not None:
                info.mtime = mtimes.get(entry.path, 0)
            with (cache / (entry.sha256 or "")).open("rb") as data:
                tar.addfile(info, data)
    out.seek(0)
    return out


def _info(name: str, kind: bytes, mode: int, uid: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = kind, mode, uid, uid
    return info
