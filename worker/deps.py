"""A build's registry dependencies, fetched by the worker's own code, never by cargo
under the crate's configuration (which may run anything while the network is up):

    Cargo.lock → each crates.io package with its sha256 → downloaded by the worker,
    checked against that sha256 → unpacked by the worker under <sha256>/ in the deps
    volume, root-owned and read-only → offered to the offline build step as a
    vendored directory source (links /work/vendor/<name>-<version> → /deps/<sha256>)

The deps volume is shared by every build on the worker, so nothing a build writes
ever reaches it: builds mount it read-only, and an entry is made only from bytes
whose sha256 is the one the lock file names. Git and other registries' packages are
refused with a reason, since fetching them is not done by trusted code yet.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import re
import secrets
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Protocol

import httpx

from crossfarm.shared import keys
from crossfarm.shared.errors import BuildError
from crossfarm.worker.container import ContainerRunner, Shelf

#: How Cargo.lock names crates.io, whatever protocol fetched the index.
CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"
#: Where the deps volume is mounted in a build container (read-only).
DEPS = "/deps"
#: The vendored directory source of a build, in its job volume: links into DEPS.
VENDOR = "vendor"
#: The job's own cargo home, in its job volume: its config points crates.io at VENDOR.
CARGO_HOME = "cargo-home"
#: Written last into each entry: cargo's directory source needs it.
_CHECKSUM_FILE = ".cargo-checksum.json"
#: One empty file per complete entry, named by its sha256, written after every entry of
#: an install: listing this folder is one call to the engine, however many crates.
_PRESENT = ".present"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_VERSION = re.compile(r"^[0-9A-Za-z.+-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DOWNLOADS = 8
_MAX_PACKAGES = 10_000
#: Tries of one download whose connection fails or which the registry answers 5xx.
_TRIES = 3
#: An unpacked crate may be at most this many times its .crate file (a tar bomb guard).
_MAX_EXPANSION = 40


class DependencyError(BuildError):
    """A dependency the farm will not fetch or could not get; the message says why."""


@dataclass(frozen=True)
class LockedCrate:
    """One crates.io package as Cargo.lock pins it."""

    name: str
    version: str
    sha256: str

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.version}"


def locked_crates(lock_text: str) -> list[LockedCrate]:
    """The crates.io packages a Cargo.lock pins; DependencyError for anything the
    worker cannot fetch and verify itself (git, other registries, no checksum)."""
    try:
        lock = tomllib.loads(lock_text)
    except tomllib.TOMLDecodeError as exc:
        raise DependencyError(f"Cargo.lock is not valid TOML: {exc}") from None
    packages = lock.get("package", [])
    if not isinstance(packages, list) or len(packages) > _MAX_PACKAGES:
        raise DependencyError(f"Cargo.lock: expected at most {_MAX_PACKAGES} [[package]] tables")
    old_checksums = lock.get("metadata", {})  # lock files of version 1 keep them here
    crates: dict[str, LockedCrate] = {}
    for package in packages:
        crate = _locked(package, old_checksums if isinstance(old_checksums, dict) else {})
        if crate is not None:
            crates[crate.dirname] = crate
    return sorted(crates.values(), key=lambda c: c.dirname)


def _locked(package: object, old_checksums: dict[str, object]) -> LockedCrate | None:
    if not isinstance(package, dict):
        raise DependencyError("Cargo.lock: a [[package]] entry is not a table")
    name, version, source = package.get("name"), package.get("version"), package.get("source")
    if not (isinstance(name, str) and _NAME.match(name)
            and isinstance(version, str) and _VERSION.match(version)):
        raise DependencyError(f"Cargo.lock: a package has a malformed name or version "
                              f"({str(name)[:80]!r} {str(version)[:80]!r})")
    if source is None:
        return None  # a path package: it travels with the source
    if not isinstance(source, str):
        raise DependencyError(f"Cargo.lock: {name} {version} has a malformed source")
    if source.startswith("git+"):
        raise DependencyError(
            f"{name} {version} is a git dependency; the farm fetches only crates.io "
            "packages (by their checksum in Cargo.lock). Vendor it (`cargo vendor`) or "
            "depend on a published version")
    if source != CRATES_IO:
        raise DependencyError(
            f"{name} {version} comes from {source[:120]}; the farm fetches only crates.io "
            "packages. Vendor it (`cargo vendor`) into the crate instead")
    checksum = package.get("checksum",
                           old_checksums.get(f"checksum {name} {version} ({source})"))
    if not (isinstance(checksum, str) and _SHA256.match(checksum)):
        raise DependencyError(f"Cargo.lock has no sha256 checksum for {name} {version}; "
                              "regenerate it with a current cargo (`cargo update -w`)")
    return LockedCrate(name, version, checksum)


class CrateSource(Protocol):
    """Where the worker gets crates; `download` checks the bytes against Cargo.lock."""

    def download(self, crate: LockedCrate, dest: IO[bytes]) -> None: ...


class Registry:
    """crates.io (or a mirror with its download layout), over HTTPS from the worker."""

    def __init__(self, url: str, max_crate_bytes: int, verify: str | bool = True,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url, self._max_bytes = url.rstrip("/"), max_crate_bytes
        self._client = httpx.Client(timeout=60, follow_redirects=True, verify=verify,
                                    transport=transport)

    def download(self, crate: LockedCrate, dest: IO[bytes]) -> None:
        """Stream `crate`'s .crate file into `dest`; DependencyError unless its bytes are
        the ones Cargo.lock names and no larger than the farm's limit. A connection that
        fails or a registry that answers 5xx is tried again, as cargo does."""
        for attempt in range(1, _TRIES + 1):
            dest.seek(0)
            dest.truncate()
            try:
                return self._download(crate, dest)
            except _Transient as exc:
                if attempt == _TRIES:
                    raise DependencyError(f"{crate.name} {crate.version}: download failed "
                                          f"{_TRIES} times: {exc}") from None
                time.sleep(attempt)

    def _download(self, crate: LockedCrate, dest: IO[bytes]) -> None:
        digest, size = hashlib.sha256(), 0
        try:
            with self._client.stream("GET", f"{self.url}/{crate.name}/{crate.dirname}.crate"
                                     ) as response:
                if response.status_code >= 500:
                    raise _Transient(f"the registry answered {response.status_code}")
                if response.status_code != 200:
                    raise DependencyError(f"{crate.name} {crate.version}: the registry answered "
                                          f"{response.status_code}; is Cargo.lock up to date?")
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise DependencyError(f"{crate.name} {crate.version} is larger than the "
                                              f"farm's limit of {self._max_bytes} bytes a crate")
                    digest.update(chunk)
                    dest.write(chunk)
        except httpx.TransportError as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
        if digest.hexdigest() != crate.sha256:
            raise DependencyError(f"{crate.name} {crate.version}: the registry served bytes "
                                  "whose sha256 is not the one in Cargo.lock; not used")


class _Transient(Exception):
    """A download failure worth another try (no answer, or a 5xx)."""


def install_tar(crate: LockedCrate, crate_file: IO[bytes], dst: tarfile.TarFile) -> None:
    """Re-pack a verified .crate into `dst` as its deps-volume entry: `<sha256>/…`,
    root-owned and read-only, with only regular files and directories under
    `<name>-<version>/`, and the checksum file last."""
    crate_file.seek(0, io.SEEK_END)
    budget = max(crate_file.tell(), 1 << 20) * _MAX_EXPANSION
    crate_file.seek(0)
    prefix = PurePosixPath(crate.dirname)
    with tarfile.open(fileobj=crate_file, mode="r:gz") as src:
        dst.addfile(_entry(crate.sha256, tarfile.DIRTYPE, 0o555))
        for member in src:
            relative = _inside(crate, prefix, member)
            if relative is None:
                continue
            budget -= member.size
            if budget < 0:
                raise DependencyError(f"{crate.name} {crate.version} unpacks to more than "
                                      f"{_MAX_EXPANSION} times its size; not used")
            name = f"{crate.sha256}/{relative}"
            if member.isdir():
                dst.addfile(_entry(name, tarfile.DIRTYPE, 0o555))
            else:
                mode = 0o555 if member.mode & 0o111 else 0o444
                dst.addfile(_entry(name, tarfile.REGTYPE, mode, member.size),
                            src.extractfile(member))
        checksum = json.dumps({"files": {}, "package": crate.sha256}).encode()
        dst.addfile(_entry(f"{crate.sha256}/{_CHECKSUM_FILE}", tarfile.REGTYPE, 0o444,
                           len(checksum)), io.BytesIO(checksum))


def _inside(crate: LockedCrate, prefix: PurePosixPath, member: tarfile.TarInfo) -> str | None:
    """A member's path inside the crate's folder; None for the folder itself; refuses
    links, devices and paths that leave the folder."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or path.parts[:1] != prefix.parts:
        raise DependencyError(f"{crate.name} {crate.version}: {member.name[:200]!r} lies "
                              "outside the crate's folder; not used")
    if not (member.isfile() or member.isdir()):
        raise DependencyError(f"{crate.name} {crate.version}: {member.name[:200]!r} is not a "
                              "regular file or folder; not used")
    relative = PurePosixPath(*path.parts[1:])
    return None if not relative.parts else str(relative)


def _entry(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.uid, info.gid = kind, mode, size, 0, 0
    return info


def vendor_tar(crates: Iterable[LockedCrate], uid: int, out: IO[bytes],
               lock_file: bytes | None = None) -> None:
    """What a build adds to its job volume (at /work): links of its vendored directory
    source into the deps volume, and its own cargo home pointing crates.io there.
    `lock_file`: a Cargo.lock made for a crate that had none, for src/Cargo.lock."""
    config = (
        "# Written by the crossfarm worker: crates.io packages come from the read-only,\n"
        "# checksum-verified deps volume; the build has no network.\n"
        "[source.crates-io]\nreplace-with = \"crossfarm-vendored\"\n\n"
        f"[source.crossfarm-vendored]\ndirectory = \"/work/{VENDOR}\"\n"
    ).encode()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in (VENDOR, CARGO_HOME):
            tar.addfile(_owned(_entry(name, tarfile.DIRTYPE, 0o755), uid))
        for crate in crates:
            link = _owned(_entry(f"{VENDOR}/{crate.dirname}", tarfile.SYMTYPE, 0o777), uid)
            link.linkname = f"{DEPS}/{crate.sha256}"
            tar.addfile(link)
        tar.addfile(_owned(_entry(f"{CARGO_HOME}/config.toml", tarfile.REGTYPE, 0o644,
                                  len(config)), uid), io.BytesIO(config))
        if lock_file is not None:
            tar.addfile(_owned(_entry("src/Cargo.lock", tarfile.REGTYPE, 0o644,
                                      len(lock_file)), uid), io.BytesIO(lock_file))


def _owned(info: tarfile.TarInfo, uid: int) -> tarfile.TarInfo:
    info.uid = info.gid = uid
    return info


@dataclass(frozen=True)
class DependencyCache:
    """The worker's deps volume: fills in what a build's Cargo.lock needs."""

    runner: ContainerRunner
    crates: CrateSource
    volume: str
    #: the image of the never-started container through which entries are written
    image: str
    #: serialises installs between this worker's build processes
    lock_path: Path
    scratch: Path

    def provide(self, crates: list[LockedCrate], say: Callable[[str], None]) -> int:
        """Make sure every crate is in the volume; returns how many were downloaded.
        When this worker's record of the volume already lists them all, the engine is
        not asked (a shelf container costs a create, a copy and a remove: most of a
        no-change rebuild's dependency step)."""
        with _locked_file(self.lock_path):
            volume_id = self._volume_id()
            if volume_id is not None and {c.sha256 for c in crates} <= self._known(volume_id):
                return 0
            with self.runner.shelf(self.volume, self.image) as shelf:
                present = shelf.names(_PRESENT)
                fetched = self._install([c for c in crates if c.sha256 not in present],
                                        len(crates), shelf, say)
            if volume_id is not None:
                self._remember(volume_id, present | {c.sha256 for c in crates})
            return fetched

    @property
    def _record(self) -> Path:
        return self.lock_path.with_name(f"{self.lock_path.stem}-present.json")

    def _volume_id(self) -> str | None:
        """The volume's id label, the volume made with one if it is missing; None for a
        volume made without (nothing is remembered of it: the engine is asked each time)."""
        labels = self.runner.volume_labels(self.volume)
        if labels is None:
            self.runner.keep_volume(self.volume, keys.deps_labels(secrets.token_hex(16)))
            labels = self.runner.volume_labels(self.volume) or {}
        return keys.labelled_deps_id(labels)

    def _known(self, volume_id: str) -> set[str]:
        """The sha256s this worker saw complete in the volume of this id (entries are
        never removed from a volume: only the volume as a whole goes, and a new one gets
        a new id)."""
        try:
            record = json.loads(self._record.read_text())
        except (OSError, ValueError):
            return set()
        if not isinstance(record, dict) or record.get("id") != volume_id \
                or record.get("volume") != self.volume:
            return set()
        return {sha for sha in record.get("sha256", []) if isinstance(sha, str)}

    def _remember(self, volume_id: str, present: set[str]) -> None:
        partial = self._record.with_suffix(".tmp")
        partial.write_text(json.dumps({"volume": self.volume, "id": volume_id,
                                       "sha256": sorted(present)}))
        partial.replace(self._record)  # whole or not at all, whatever stops the worker

    def _install(self, missing: list[LockedCrate], wanted: int, shelf: Shelf,
                 say: Callable[[str], None]) -> int:
        """Download, check and write `missing` through the shelf; returns how many."""
        if not missing:
            return 0
        say(f"crossfarm: downloading {len(missing)} of {wanted} crate(s), each "
            "checked against the sha256 in Cargo.lock")
        # One tar for all of them: each write through the engine mounts the volume.
        with tempfile.TemporaryFile(dir=self.scratch) as out:
            with (tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst,
                  ThreadPoolExecutor(_DOWNLOADS) as pool):
                for crate, crate_file in zip(missing, pool.map(self._fetch, missing),
                                             strict=True):
                    with crate_file:
                        install_tar(crate, crate_file, dst)
                dst.addfile(_entry(_PRESENT, tarfile.DIRTYPE, 0o555))
                for crate in missing:
                    dst.addfile(_entry(f"{_PRESENT}/{crate.sha256}", tarfile.REGTYPE, 0o444))
            out.seek(0)
            shelf.put(out)
        return len(missing)

    def _fetch(self, crate: LockedCrate) -> IO[bytes]:
        # handed to the caller, which closes it
        crate_file = tempfile.TemporaryFile(dir=self.scratch)  # noqa: SIM115
        try:
            self.crates.download(crate, crate_file)
        except BaseException:
            crate_file.close()
            raise
        return crate_file


@contextmanager
def _locked_file(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
