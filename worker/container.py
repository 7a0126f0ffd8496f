"""The Docker adapter: the only module that imports docker.

One build step is one container: create, copy files in, attach, start, wait
(with a deadline, a stop check and a stall watchdog), copy outputs out, and always
remove it.
Containers carry crossfarm labels so leftovers can be found and reaped.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container as EngineContainer
from docker.models.volumes import Volume as EngineVolume

from crossfarm.shared import keys
from crossfarm.shared.errors import (
    BuildCancelled,
    BuildError,
    BuildStalled,
    BuildTimeout,
    LimitExceeded,
)
from crossfarm.worker import disk, stall
from crossfarm.worker.disk import DiskSpec, JobDisk

LineSink = Callable[[str, str], None]  # (stream name "stdout" | "stderr", line)
#: Polled while a step runs: a reason to stop it, or None to go on.
StopCheck = Callable[[], str | None]
#: A line of output longer than this many bytes is cut (Container.run's default).
MAX_LINE_BYTES = 64 * 1024
#: Ends a line cut at its limit; the rest of that line is dropped, not carried over.
LINE_CUT = " [crossfarm: line cut at {limit} bytes; the rest of it was dropped]"


@dataclass(frozen=True)
class Step:
    """One command to run in a builder container."""

    image: str
    command: list[str]
    workdir: str
    user: str
    env: dict[str, str]
    network: bool
    #: named volumes → mount point
    volumes: dict[str, str]
    #: named volumes → read-only mount point (shared between builds: never writable)
    readonly_volumes: dict[str, str] = field(default_factory=dict)
    #: host files → read-only mount point
    binds: dict[Path, str] = field(default_factory=dict)
    cpus: float = 1.0
    memory_bytes: int = 2 * 1024**3
    pids: int = 1024
    labels: dict[str, str] = field(default_factory=dict)
    #: the size of each tmpfs (/tmp and HOME) beside the read-only root
    tmpfs_bytes: int = 512 * 1024**2
    #: a writable root filesystem, for a step that runs none of the crate's code and
    #: gets its files in the image's tree rather than in a volume
    writable_root: bool = False
    #: variables the image sets that the container must not have (the engine drops a
    #: name given without a value)
    unset_env: tuple[str, ...] = ()


#: The build user's HOME in the builder image (deploy/images/builder).
BUILD_HOME = "/home/builder"


@dataclass(frozen=True)
class StepResult:
    exit_code: int
    oom_killed: bool


class StepContainer(Protocol):
    """A created builder container: files go in, the step runs once, files come out."""

    def put(self, path: str, tar: IO[bytes]) -> None: ...
    def run(self, sink: LineSink, deadline: float, should_stop: StopCheck,
            max_line: int = MAX_LINE_BYTES, stall_s: float = 0) -> StepResult: ...
    def copy_out(self, path: str, dest_dir: Path, max_bytes: int | None = None) -> Path: ...
    def archive(self, path: str) -> AbstractContextManager[IO[bytes]]: ...


class Shelf(Protocol):
    """A named volume the worker itself writes into, through a container never started."""

    def names(self, folder: str) -> set[str]: ...
    def put(self, tar: IO[bytes]) -> None: ...


class ContainerRunner(Protocol):
    """What a worker needs from a container engine; Docker is the one we ship."""

    def has_image(self, name: str) -> bool: ...
    def image_id(self, name: str) -> str | None: ...
    def volume(self, name: str, labels: dict[str, str], size: DiskSpec | None = None
               ) -> AbstractContextManager[str]: ...
    def volume_full(self, name: str) -> bool: ...
    def keep_volume(self, name: str, labels: dict[str, str]) -> None: ...
    def volume_bytes(self, name: str) -> int | None: ...
    def volume_labels(self, name: str) -> dict[str, str] | None: ...
    def remove_volume(self, name: str) -> None: ...
    def volumes_labelled(self, selector: str) -> dict[str, dict[str, str]]: ...
    def fill_volumes(self, image: str, mounts: dict[str, str], labels: dict[str, str]
                     ) -> None: ...
    def storage_driver(self) -> str | None: ...
    def copy_from_volume(self, name: str, path: str, dest_dir: Path,
                         max_bytes: int | None = None) -> Path | None: ...
    def container(self, step: Step) -> AbstractContextManager[StepContainer]: ...
    def shelf(self, volume: str, image: str) -> AbstractContextManager[Shelf]: ...
    def reap(self, worker: str, keep: Callable[[], set[str]]) -> int: ...


class Docker:
    """Builder containers on a Docker engine (the local one unless DOCKER_HOST says otherwise)."""

    def __init__(self) -> None:
        self._client = docker.from_env(timeout=300)
        #: the job disks of the volumes this process made, by volume name
        self._disks: dict[str, tuple[JobDisk, int]] = {}
        self._driver: str | None = None

    def close(self) -> None:
        self._client.close()

    def ping(self) -> None:
        """One round trip to the engine (GET /_ping); raises unless it answers."""
        self._client.ping()

    def has_image(self, name: str) -> bool:
        try:
            self._client.images.get(name)
        except docker.errors.ImageNotFound:
            return False
        return True

    def image_id(self, name: str) -> str | None:
        try:
            return self._client.images.get(name).id
        except docker.errors.ImageNotFound:
            return None

    @contextmanager
    def volume(self, name: str, labels: dict[str, str], size: DiskSpec | None = None
               ) -> Iterator[str]:
        """A named volume that exists for the `with` block only. With `size`, it is a
        filesystem of that size on a loop device (worker/disk.py): a hard limit. The
        disk is detached and its image deleted when the block ends, whatever happens."""
        job_disk, options = None, {}
        if size is not None and size.size_bytes:
            worker, task = keys.labelled_worker(labels), keys.labelled_task(labels)
            if worker is None or task is None:
                raise BuildError(f"volume {name}: a sized volume needs its worker and task "
                                 "labels, for the reaper")
            job_disk = disk.attach(size, worker, task)
            options = {"type": "ext4", "device": job_disk.device, "o": "nodev,nosuid"}
        try:
            self._client.volumes.create(name=name, driver="local", driver_opts=options,
                                        labels={keys.LABEL: "1", **labels})
            if job_disk is not None:
                self._disks[name] = (job_disk, size.size_bytes if size else 0)
            yield name
        finally:
            self._disks.pop(name, None)
            with suppress(docker.errors.NotFound):
                self._client.volumes.get(name).remove(force=True)
            if job_disk is not None:
                disk.release(job_disk)

    def volume_full(self, name: str) -> bool:
        """Whether a sized volume made here is full; False for any other."""
        made = self._disks.get(name)
        return made is not None and disk.is_full(*made)

    def keep_volume(self, name: str, labels: dict[str, str]) -> None:
        """A named volume that outlives the job (a warm target dir); made if missing."""
        try:
            self._client.volumes.get(name)
        except docker.errors.NotFound:
            self._client.volumes.create(name=name, driver="local", labels=labels)

    def volume_bytes(self, name: str) -> int | None:
        """The bytes a volume holds on disk (None: it is gone, or the engine does not say)."""
        try:
            mountpoint = self._client.volumes.get(name).attrs.get("Mountpoint")
        except docker.errors.NotFound:
            return None
        if isinstance(mountpoint, str) and os.access(mountpoint, os.R_OK | os.X_OK):
            # the engine's own count (system df) walks every volume and image: seconds
            return _disk_usage(Path(mountpoint))
        api = self._client.api
        # Only the volumes' part of the engine's disk usage (API 1.42+; an older engine
        # answers with everything, which holds the same list).
        response = api.get(f"{api.base_url}/v{api.api_version}/system/df",
                           params={"type": "volume"})
        if not response.ok:
            return None
        for volume in response.json().get("Volumes") or []:
            if volume.get("Name") == name:
                size = (volume.get("UsageData") or {}).get("Size", -1)
                return int(size) if isinstance(size, int) and size >= 0 else None
        return None

    def volume_labels(self, name: str) -> dict[str, str] | None:
        """A volume's labels; None if there is no such volume."""
        try:
            labels = self._client.volumes.get(name).attrs.get("Labels")
        except docker.errors.NotFound:
            return None
        return dict(labels) if isinstance(labels, dict) else {}

    def remove_volume(self, name: str) -> None:
        with suppress(docker.errors.NotFound):
            self._client.volumes.get(name).remove(force=True)

    def volumes_labelled(self, selector: str) -> dict[str, dict[str, str]]:
        """The volumes carrying a label ("name=value"): name -> labels."""
        return {volume.name: dict(volume.attrs.get("Labels") or {})
                for volume in self._client.volumes.list(filters={"label": selector})}

    def fill_volumes(self, image: str, mounts: dict[str, str], labels: dict[str, str]
                     ) -> None:
        """New volumes (name -> path) holding what `image` has at each path: the engine
        copies an image's files into an empty volume when a container it makes mounts
        it there, so a container is made and removed, never started (no code runs)."""
        for name in mounts:
            self._client.volumes.create(name=name, driver="local", labels=labels)
        raw = self._client.containers.create(
            image=image, command=["true"], user="0:0", network_mode="none",
            volumes={name: {"bind": path, "mode": "ro"} for name, path in mounts.items()},
            labels={keys.LABEL: "1"})
        with _removed_after(raw):
            pass

    def storage_driver(self) -> str | None:
        """The engine's storage driver for images ("overlay2", "fuse-overlayfs"), once
        per process."""
        if self._driver is None:
            self._driver = str(self._client.info().get("Driver") or "")
        return self._driver or None

    def copy_from_volume(self, name: str, path: str, dest_dir: Path,
                         max_bytes: int | None = None) -> Path | None:
        """Copy one regular file of a plain volume (`path` relative to its root) into
        `dest_dir`, read from the volume's own directory on this host: no archive through
        the engine, which mounts the container's volumes for each copy and streams a tar
        (0.2-0.35 s for a 51 MB binary on a loaded 2-core machine). What the build left
        there is hostile: see read_beneath. None when this process cannot reach that
        directory (the engine runs elsewhere, or this worker is not root): copy it out of
        the container instead. Only for volumes that stay mounted, as a warm dir does."""
        try:
            mountpoint = self._client.volumes.get(name).attrs.get("Mountpoint")
        except docker.errors.NotFound:
            return None
        if not isinstance(mountpoint, str) or not os.access(mountpoint, os.R_OK | os.X_OK):
            return None
        return read_beneath(Path(mountpoint), path, dest_dir, max_bytes)

    @contextmanager
    def container(self, step: Step) -> Iterator[Container]:
        """A created (not started) container for `step`, removed when the block ends.
        Engine errors inside the block become BuildError, naming the engine."""
        mounts = {name: {"bind": path, "mode": "rw"} for name, path in step.volumes.items()}
        for name, path in step.readonly_volumes.items():
            mounts[name] = {"bind": path, "mode": "ro"}
        for host, path in step.binds.items():
            mounts[str(host)] = {"bind": path, "mode": "ro"}
        raw = self._client.containers.create(
            image=step.image,
            command=step.command,
            working_dir=step.workdir,
            user=step.user,
            environment=_environment(step),
            network_mode="bridge" if step.network else "none",
            volumes=mounts,
            nano_cpus=int(step.cpus * 1e9),
            mem_limit=step.memory_bytes,
            memswap_limit=step.memory_bytes,
            pids_limit=step.pids,
            cap_drop=["ALL"],
            # The engine's default seccomp profile applies: no seccomp option is given.
            security_opt=["no-new-privileges"],
            read_only=not step.writable_root,
            tmpfs=_tmpfs(step),
            labels={keys.LABEL: "1", **step.labels},
        )
        with _removed_after(raw):
            yield Container(raw)

    @contextmanager
    def shelf(self, volume: str, image: str) -> Iterator[VolumeShelf]:
        """`volume` mounted read-write at its root in a container that never starts (no
        code runs in it): the engine itself reads and writes the files."""
        raw = self._client.containers.create(
            image=image, command=["true"], user="0:0", network_mode="none",
            volumes={volume: {"bind": _SHELF, "mode": "rw"}}, labels={keys.LABEL: "1"})
        with _removed_after(raw):
            yield VolumeShelf(raw)

    def reap(self, worker: str, keep: Callable[[], set[str]]) -> int:
        """Remove this worker's containers and job volumes whose "<job>-<attempt>" is not in
        keep() (leftovers of a build process that died). keep() is read after listing, so
        a build that starts meanwhile is never mistaken for a leftover."""
        selector: dict[str, str | list[str] | bool] = {
            "label": keys.worker_selector(worker)
        }
        containers = self._client.containers.list(all=True, filters=selector)
        volumes = self._client.volumes.list(filters=selector)
        disks = disk.attached(worker)
        alive = keep()
        leftovers: list[EngineContainer | EngineVolume] = [
            *(c for c in containers if keys.labelled_task(c.labels) not in alive),
            *(v for v in volumes if keys.labelled_task(v.attrs.get("Labels") or {}) not in alive),
        ]
        removed = 0
        for thing in leftovers:
            with suppress(docker.errors.NotFound, docker.errors.APIError):
                thing.remove(force=True)
                removed += 1
        # Last: a disk's volume (and any container using it) is gone by now.
        for job_disk in disks:
            if job_disk.task not in alive:
                disk.release(job_disk)
                removed += 1
        return removed


class JoinedTars(io.RawIOBase):
    """Seekable tar streams read as one archive: the members of each in turn, and only the
    last one's end-of-archive blocks. One copy into a container then puts all of them in
    place; each copy is a round trip in which the engine mounts the container's volumes
    (60-130 ms apiece on a loaded 2-core machine). Every member keeps its own path, so
    all of the tars must be meant for the same directory."""

    def __init__(self, tars: list[IO[bytes]]) -> None:
        self._parts: list[tuple[IO[bytes], int | None]] = [
            (tar, _members_end(tar)) for tar in tars[:-1]]
        self._parts += [(tar, None) for tar in tars[-1:]]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._parts:
            tar, end = self._parts[0]
            want = len(buffer) if end is None else min(len(buffer), end - tar.tell())
            data = tar.read(want) if want > 0 else b""
            if data:
                buffer[:len(data)] = data
                return len(data)
            self._parts.pop(0)
        return 0


def joined_tars(tars: list[IO[bytes]]) -> IO[bytes]:
    """JoinedTars as a buffered stream."""
    return io.BufferedReader(JoinedTars(tars), 1 << 20)


def _members_end(tar: IO[bytes]) -> int:
    """Where a tar's members end and its end-of-archive blocks begin; the stream is left
    at its start."""
    tar.seek(0)
    end = 0
    with tarfile.open(fileobj=tar, mode="r:") as archive:
        for member in archive:  # headers only: the data is seeked over
            end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    tar.seek(0)
    return end


def _environment(step: Step) -> list[str]:
    """The container's variables as the engine takes them: NAME=VALUE, and a bare NAME
    to drop the image's value."""
    return [f"{name}={value}" for name, value in step.env.items()] + list(step.unset_env)


def _disk_usage(root: Path) -> int:
    """The bytes of disk the files under `root` take (as du counts: allocated blocks)."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            with suppress(OSError):  # removed while counted
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


def _tmpfs(step: Step) -> dict[str, str]:
    """/tmp and HOME as size-limited tmpfs beside a read-only root (exec allowed: build
    tools run what they compile in temporary directories)."""
    if step.writable_root:
        return {}
    size = f"size={step.tmpfs_bytes},exec,nosuid,nodev"
    uid = step.user.split(":")[0]
    return {"/tmp": f"{size},mode=1777", BUILD_HOME: f"{size},mode=0700,uid={uid},gid={uid}"}


@contextmanager
def _removed_after(raw: EngineContainer) -> Iterator[None]:
    """Engine errors inside the block become BuildError, naming the engine; the
    container is removed when the block ends, whatever happened."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise BuildError(f"docker engine error: {exc.explanation or exc}") from exc
    finally:
        with suppress(docker.errors.NotFound):
            raw.remove(force=True, v=False)


#: Where a shelf's volume is mounted in its container.
_SHELF = "/shelf"


class VolumeShelf:
    """A volume written through a stopped container; see Docker.shelf."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def names(self, folder: str) -> set[str]:
        """The names directly in `folder` of the volume; none if it does not exist."""
        try:
            chunks, _stat = self._raw.get_archive(f"{_SHELF}/{folder}")
        except docker.errors.NotFound:
            return set()
        # The whole stream is read (the engine holds the container until it is); the
        # archive holds the folder under its own name.
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r:") as tar:
            return {Path(m.name).name for m in tar if len(Path(m.name).parts) == 2}

    def put(self, tar: IO[bytes]) -> None:
        """Extract a tar stream at the volume's root; headers' owners and modes are kept."""
        if not self._raw.put_archive(_SHELF, tar):
            raise BuildError("could not write into the dependency volume")


class Container:
    """A builder container that exists; see Docker.container."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def put(self, path: str, tar: IO[bytes]) -> None:
        """Extract a tar stream at `path`; the tar headers' uid/gid are kept."""
        if not self._raw.put_archive(path, tar):
            raise BuildError(f"could not copy files into the container at {path}")

    def run(self, sink: LineSink, deadline: float, should_stop: StopCheck,
            max_line: int = MAX_LINE_BYTES, stall_s: float = 0) -> StepResult:
        """Start, stream output lines to `sink` (each cut at `max_line` bytes), and wait
        for exit, the deadline, a stop, or with `stall_s` a stall: nothing printed and
        next to no CPU time used for that many seconds (BuildStalled, worker/stall.py)."""
        stream = _Counted(self._raw.attach(stdout=True, stderr=True, stream=True, logs=True,
                                           demux=True))
        pump = threading.Thread(target=_pump, args=(stream, sink, max_line), daemon=True)
        pump.start()
        self._raw.start()
        try:
            status = self._wait(deadline, should_stop, stream, stall_s)
        except BaseException:  # whatever stopped the wait stops the build, before the
            with suppress(Exception):  # log pump (perhaps stuck on a dead link) is joined
                self._kill()
            raise
        finally:
            pump.join(timeout=10)
        self._raw.reload()
        oom = bool(self._raw.attrs.get("State", {}).get("OOMKilled"))
        return StepResult(exit_code=int(status.get("StatusCode", -1)), oom_killed=oom)

    def _wait(self, deadline: float, should_stop: StopCheck, printed: _Counted,
              stall_s: float) -> dict[str, Any]:
        mark = stall.Sample(at=time.monotonic(), printed=0, cpu_ns=None)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise BuildTimeout("the build ran past its time limit and was killed")
            reason = should_stop()
            if reason:
                self._kill()
                raise BuildCancelled(reason)
            try:
                status: dict[str, Any] = self._raw.wait(timeout=min(1.0, max(remaining, 0.1)))
                return status
            except (requests.exceptions.ConnectionError, requests.exceptions.ReadTimeout):
                pass  # docker-py reports a wait timeout as one of these, by transport
            mark = self._watch(mark, printed.bytes, stall_s)

    def _watch(self, mark: stall.Sample, printed: int, stall_s: float) -> stall.Sample:
        """What the engine's stats say of the running step, read once: it is ended at its
        pids limit, or once stalled; else the stall watchdog's next mark."""
        stats = self._stats()
        if limit := _at_pids_limit(stats):
            # A fork bomb held at the limit never ends by itself (its children keep
            # cargo's pipes open): end it now, saying which limit it met.
            self._kill()
            raise LimitExceeded("pids", f"the build reached its limit of {limit} "
                                "processes and threads", limit, "CROSSFARM_BUILD_PIDS")
        now = stall.Sample(at=time.monotonic(), printed=printed, cpu_ns=_cpu_ns(stats))
        verdict = stall.judge(mark, now, stall_s)
        if isinstance(verdict, stall.Stalled):
            self._kill()
            raise BuildStalled(verdict.quiet_s, verdict.cpu_s, stall_s)
        return verdict

    def _stats(self) -> dict[str, Any]:
        """One read of the container's stats (cgroup counters, no waiting for a second
        read); empty if the engine did not answer."""
        try:
            stats = self._raw.stats(stream=False, one_shot=True)
        except (docker.errors.APIError, requests.exceptions.RequestException):
            return {}
        return stats if isinstance(stats, dict) else {}

    def _kill(self) -> None:
        with suppress(docker.errors.APIError):
            self._raw.kill()

    def copy_out(self, path: str, dest_dir: Path, max_bytes: int | None = None) -> Path:
        """Copy one regular file out of the container into `dest_dir`, streamed to disk;
        returns the local path. A file over `max_bytes` is refused before its bytes are
        read (LimitExceeded, kind "artifacts")."""
        chunks, stat = self._raw.get_archive(path)
        stream = _ChunkReader(chunks)
        del chunks  # the reader holds the only reference: drop() lets go of it
        try:
            declared = int((stat or {}).get("size", 0))
            if max_bytes is not None and declared > max_bytes:
                raise _too_big(path, declared, max_bytes)
            return _save(path, stream, dest_dir, max_bytes)
        finally:
            # The engine holds the container until its archive stream is read or closed:
            # an unread (refused) stream is closed here, and its connection with it.
            stream.drop()

    @contextmanager
    def archive(self, path: str) -> Iterator[IO[bytes]]:
        """The engine's tar stream of `path` (a directory with all it holds), read only as
        far as the caller reads; what it holds is the build's, so the caller checks it."""
        try:
            chunks, _stat = self._raw.get_archive(path)
        except docker.errors.NotFound:
            raise BuildError(f"{path} is not in the container") from None
        stream = _ChunkReader(chunks)
        del chunks
        try:
            yield io.BufferedReader(stream, buffer_size=1 << 16)
        finally:
            stream.drop()  # an unread rest is closed, and the engine lets go of the container


def _at_pids_limit(stats: dict[str, Any]) -> int | None:
    """The container's pids limit if it has reached it, else None (or unknown)."""
    pids = stats.get("pids_stats") or {}
    current, limit = pids.get("current"), pids.get("limit")
    if isinstance(current, int) and isinstance(limit, int) and 0 < limit <= current:
        return limit
    return None


def _cpu_ns(stats: dict[str, Any]) -> int | None:
    """The CPU time the container has used, in nanoseconds (its cgroup's count), if the
    stats hold it."""
    total = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    return total if isinstance(total, int) and total >= 0 else None


def _save(path: str, stream: _ChunkReader, dest_dir: Path, max_bytes: int | None) -> Path:
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        member = tar.next()
        if member is None or not member.isfile():
            raise BuildError(f"{path} in the container is not a regular file")
        if max_bytes is not None and member.size > max_bytes:
            raise _too_big(path, member.size, max_bytes)
        source = tar.extractfile(member)
        assert source is not None
        local = dest_dir / Path(path).name
        with local.open("wb") as out:
            while block := source.read(1 << 20):
                out.write(block)
        local.chmod(0o755 if member.mode & 0o111 else 0o644)
        for _rest in tar:  # the tar's end blocks: the whole stream is read
            pass
    return local


def read_beneath(root: Path, path: str, dest_dir: Path, max_bytes: int | None = None) -> Path:
    """Copy the regular file `path` (relative) under `root` to `dest_dir`, keeping its
    executable bit. Every part of the path is opened relative to the one before it and
    never through a symlink, and the last must be a regular file (not a fifo, which
    would block): a link the build planted, to anywhere on this host, is refused, never
    followed (BuildError). Over `max_bytes` is refused before any byte is read."""
    parts = path.split("/")
    if not path or any(part in ("", ".", "..") for part in parts):
        raise BuildError(f"{path!r} is not a plain path under the volume")
    nofollow = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fds = [os.open(root, nofollow | os.O_DIRECTORY)]
    try:
        for part in parts[:-1]:
            fds.append(_open_part(path, part, nofollow | os.O_DIRECTORY, fds[-1]))
        fds.append(_open_part(path, parts[-1], nofollow | os.O_NONBLOCK, fds[-1]))
        info = os.fstat(fds[-1])
        if not stat.S_ISREG(info.st_mode):
            raise BuildError(f"{path} in the container is not a regular file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise _too_big(path, info.st_size, max_bytes)
        local = dest_dir / parts[-1]
        with open(fds.pop(), "rb") as source, local.open("wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        local.chmod(0o755 if info.st_mode & 0o111 else 0o644)
        return local
    finally:
        for fd in fds:
            os.close(fd)


def _open_part(path: str, part: str, flags: int, parent: int) -> int:
    try:
        return os.open(part, flags, dir_fd=parent)
    except OSError as exc:  # ELOOP: a symlink; ENOTDIR: a link or file on the way
        raise BuildError(f"{path} in the container is not a regular file "
                         f"({exc.strerror})") from None


def _too_big(path: str, size: int, max_bytes: int) -> LimitExceeded:
    return LimitExceeded("artifacts", f"{path} is {size} bytes, more than the {max_bytes} "
                         "bytes left of the job's artifact budget", max_bytes,
                         "CROSSFARM_ARTIFACT_MAX_BYTES")


class _ChunkReader(io.RawIOBase):
    """A byte stream over docker-py's chunk iterator, read as far as asked and no further."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks: Iterator[bytes] = chunks
        self._left = memoryview(b"")

    def drop(self) -> None:
        """Close the chunk iterator and let go of it (its connection closes with it)."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        self._chunks = iter(())

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._left = memoryview(chunk)
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


class _Counted:
    """docker-py's demuxed output stream, counting the bytes it has passed on: the
    stall watchdog reads the count from the waiting thread while the pump reads on."""

    def __init__(self, stream: Iterator[tuple[bytes | None, bytes | None]]) -> None:
        self._stream = stream
        self.bytes = 0

    def __iter__(self) -> Iterator[tuple[bytes | None, bytes | None]]:
        for out, err in self._stream:
            self.bytes += len(out or b"") + len(err or b"")
            yield out, err


def _pump(stream: Iterable[tuple[bytes | None, bytes | None]], sink: LineSink,
          max_line: int = MAX_LINE_BYTES) -> None:
    lines = {name: _Lines(name, sink, max_line) for name in ("stdout", "stderr")}
    for out, err in stream:
        if out:
            lines["stdout"].feed(out)
        if err:
            lines["stderr"].feed(err)
    for each in lines.values():
        each.close()


class _Lines:
    """One stream's bytes as lines, in time linear in the bytes: a line that grows past
    `limit` is passed on at once, cut and marked, and the rest of it is skipped as it
    comes (never held), up to its newline."""

    def __init__(self, name: str, sink: LineSink, limit: int) -> None:
        self._name, self._sink, self._limit = name, sink, limit
        self._pending = bytearray()
        self._skipping = False

    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            end = len(chunk) if newline < 0 else newline
            if not self._skipping:
                room = self._limit - len(self._pending)
                if end - start > room:
                    self._pending += chunk[start:start + room]
                    self._emit(cut=True)
                    self._skipping = True
                else:
                    self._pending += chunk[start:end]
            if newline < 0:
                return
            if self._skipping:
                self._skipping = False
            else:
                self._emit(cut=False)
            start = newline + 1

    def close(self) -> None:
        if self._pending and not self._skipping:
            self._sink(self._name, self._pending.decode("utf-8", "replace"))
        self._pending.clear()

    def _emit(self, cut: bool) -> None:
        text = self._pending.decode("utf-8", "replace")
        self._pending.clear()
        self._sink(self._name, text + LINE_CUT.format(limit=self._limit) if cut
                   else text.rstrip("\r"))
