"""The Docker adapter: the only module that imports docker.

One build step is one container: create, copy files in, attach, start, wait
(with a deadline and a stop check), copy outputs out, and always remove it.
Containers carry crossfarm labels so leftovers can be found and reaped.
"""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
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
from crossfarm.shared.errors import BuildCancelled, BuildError, BuildTimeout

LineSink = Callable[[str, str], None]  # (stream name "stdout" | "stderr", line)
#: Polled while a step runs: a reason to stop it, or None to go on.
StopCheck = Callable[[], str | None]


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


@dataclass(frozen=True)
class StepResult:
    exit_code: int
    oom_killed: bool


class StepContainer(Protocol):
    """A created builder container: files go in, the step runs once, files come out."""

    def put(self, path: str, tar: IO[bytes]) -> None: ...
    def run(self, sink: LineSink, deadline: float, should_stop: StopCheck) -> StepResult: ...
    def copy_out(self, path: str, dest_dir: Path) -> Path: ...


class Shelf(Protocol):
    """A named volume the worker itself writes into, through a container never started."""

    def has(self, path: str) -> bool: ...
    def put(self, tar: IO[bytes]) -> None: ...


class ContainerRunner(Protocol):
    """What a worker needs from a container engine; Docker is the one we ship."""

    def has_image(self, name: str) -> bool: ...
    def image_id(self, name: str) -> str | None: ...
    def volume(self, name: str, labels: dict[str, str]) -> AbstractContextManager[str]: ...
    def container(self, step: Step) -> AbstractContextManager[StepContainer]: ...
    def shelf(self, volume: str, image: str) -> AbstractContextManager[Shelf]: ...
    def reap(self, worker: str, keep: Callable[[], set[str]]) -> int: ...


class Docker:
    """Builder containers on a Docker engine (the local one unless DOCKER_HOST says otherwise)."""

    def __init__(self) -> None:
        self._client = docker.from_env(timeout=300)

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
    def volume(self, name: str, labels: dict[str, str]) -> Iterator[str]:
        """A named volume that exists for the `with` block only."""
        self._client.volumes.create(name=name, labels={keys.LABEL: "1", **labels})
        try:
            yield name
        finally:
            with suppress(docker.errors.NotFound):
                self._client.volumes.get(name).remove(force=True)

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
            environment=step.env,
            network_mode="bridge" if step.network else "none",
            volumes=mounts,
            nano_cpus=int(step.cpus * 1e9),
            mem_limit=step.memory_bytes,
            memswap_limit=step.memory_bytes,
            pids_limit=step.pids,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            labels={keys.LABEL: "1", **step.labels},
        )
        try:
            yield Container(raw)
        except docker.errors.APIError as exc:
            raise BuildError(f"docker engine error: {exc.explanation or exc}") from exc
        finally:
            with suppress(docker.errors.NotFound):
                raw.remove(force=True, v=False)

    @contextmanager
    def shelf(self, volume: str, image: str) -> Iterator[VolumeShelf]:
        """`volume` mounted read-write at its root in a container that never starts (no
        code runs in it): the engine itself reads and writes the files."""
        raw = self._client.containers.create(
            image=image, command=["true"], user="0:0", network_mode="none",
            volumes={volume: {"bind": _SHELF, "mode": "rw"}}, labels={keys.LABEL: "1"})
        try:
            yield VolumeShelf(raw)
        except docker.errors.APIError as exc:
            raise BuildError(f"docker engine error: {exc.explanation or exc}") from exc
        finally:
            with suppress(docker.errors.NotFound):
                raw.remove(force=True, v=False)

    def reap(self, worker: str, keep: Callable[[], set[str]]) -> int:
        """Remove this worker's containers and job volumes whose "<job>-<attempt>" is not in
        keep() (leftovers of a build process that died). keep() is read after listing, so
        a build that starts meanwhile is never mistaken for a leftover."""
        selector: dict[str, str | list[str] | bool] = {
            "label": keys.worker_selector(worker)
        }
        containers = self._client.containers.list(all=True, filters=selector)
        volumes = self._client.volumes.list(filters=selector)
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
        return removed


#: Where a shelf's volume is mounted in its container.
_SHELF = "/shelf"


class VolumeShelf:
    """A volume written through a stopped container; see Docker.shelf."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def has(self, path: str) -> bool:
        try:
            chunks, _stat = self._raw.get_archive(f"{_SHELF}/{path}")
        except docker.errors.NotFound:
            return False
        for _chunk in chunks:  # the engine holds the container until the stream is read
            pass
        return True

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

    def run(self, sink: LineSink, deadline: float, should_stop: StopCheck) -> StepResult:
        """Start, stream output lines to `sink`, and wait for exit, the deadline or a stop."""
        stream = self._raw.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
        pump = threading.Thread(target=_pump, args=(stream, sink), daemon=True)
        pump.start()
        self._raw.start()
        try:
            status = self._wait(deadline, should_stop)
        except BaseException:  # whatever stopped the wait stops the build, before the
            with suppress(Exception):  # log pump (perhaps stuck on a dead link) is joined
                self._kill()
            raise
        finally:
            pump.join(timeout=10)
        self._raw.reload()
        oom = bool(self._raw.attrs.get("State", {}).get("OOMKilled"))
        return StepResult(exit_code=int(status.get("StatusCode", -1)), oom_killed=oom)

    def _wait(self, deadline: float, should_stop: StopCheck) -> dict[str, Any]:
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
                continue  # docker-py reports a wait timeout as one of these, by transport

    def _kill(self) -> None:
        with suppress(docker.errors.APIError):
            self._raw.kill()

    def copy_out(self, path: str, dest_dir: Path) -> Path:
        """Copy one file out of the container into `dest_dir`; returns the local path."""
        chunks, _stat = self._raw.get_archive(path)
        # The whole stream must be read: the engine holds the container until it is.
        buffer = io.BytesIO(b"".join(chunks))
        with tarfile.open(fileobj=buffer) as tar:
            member = tar.next()
            if member is None or not member.isfile():
                raise BuildError(f"{path} in the container is not a regular file")
            source = tar.extractfile(member)
            assert source is not None
            local = dest_dir / Path(path).name
            with local.open("wb") as out:
                while block := source.read(1 << 20):
                    out.write(block)
            local.chmod(0o755 if member.mode & 0o111 else 0o644)
        return local


def _pump(stream: Iterator[tuple[bytes | None, bytes | None]], sink: LineSink) -> None:
    pending = {"stdout": b"", "stderr": b""}
    for out, err in stream:
        for name, chunk in (("stdout", out), ("stderr", err)):
            if not chunk:
                continue
            *lines, pending[name] = (pending[name] + chunk).split(b"\n")
            for line in lines:
                sink(name, line.decode("utf-8", "replace").rstrip("\r"))
    for name, rest in pending.items():
        if rest:
            sink(name, rest.decode("utf-8", "replace"))
