"""In-memory fakes of the worker's adapters, one per Protocol, for the unit tier.

Each is checked against its Protocol by mypy (`make typecheck`, see the end of this
file), so a fake cannot drift from what the pipeline calls. They record what they
were asked, for tests to assert on.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from crossfarm.shared import keys
from crossfarm.shared.errors import (
    BuildCancelled,
    BuildError,
    BuildStalled,
    LimitExceeded,
    NotFound,
    StorageError,
)
from crossfarm.shared.ids import BuildId, JobId, SourceDigest
from crossfarm.shared.storage import PendingUpload, StoredFile, StoredObject
from crossfarm.shared.tree import tree_digest
from crossfarm.shared.wire import (
    HeartbeatReply,
    JobFinished,
    JobStarted,
    SourceTree,
    StartVerdict,
    TreeEntry,
    WorkerHeartbeat,
)
from crossfarm.worker.container import (
    MAX_LINE_BYTES,
    LineSink,
    Step,
    StepResult,
    StopCheck,
    read_beneath,
)
from crossfarm.worker.deps import DependencyError, LockedCrate
from crossfarm.worker.disk import DiskSpec


@dataclass(frozen=True)
class Replay:
    """One step as a real run of it went: its output lines, how it ended, what it left."""

    #: (stream "stdout" | "stderr", line), in the order the step printed them
    lines: list[tuple[str, str]] = field(default_factory=list)
    exit_code: int = 0
    oom_killed: bool = False
    #: files the step leaves in the container, by their path there
    files: dict[str, bytes] = field(default_factory=dict)
    #: symlinks the step leaves in the container (path there -> target)
    symlinks: dict[str, str] = field(default_factory=dict)
    #: after its lines the step hangs, silent and idle: only the stall watchdog ends it
    stalled: bool = False


class FakeContainer:
    """A container that replays one recorded step."""

    def __init__(self, step: Step, replay: Replay) -> None:
        self.step, self.replay = step, replay
        self.puts: list[tuple[str, bytes]] = []
        self.ran = False
        #: the stall limit the step ran under
        self.stall_s: float | None = None

    def put(self, path: str, tar: IO[bytes]) -> None:
        self.puts.append((path, tar.read()))

    def run(self, sink: LineSink, deadline: float, should_stop: StopCheck,
            max_line: int = MAX_LINE_BYTES, stall_s: float = 0) -> StepResult:
        self.ran, self.stall_s = True, stall_s
        # As Docker's container does, the stop check comes before the step gets anywhere.
        if reason := should_stop():
            raise BuildCancelled(reason)
        for stream, line in self.replay.lines:
            sink(stream, line)
        if self.replay.stalled:
            if not stall_s:
                raise AssertionError("a hung step with no stall watchdog would never end")
            raise BuildStalled(quiet_s=stall_s, cpu_s=0.0, limit_s=stall_s)
        return StepResult(exit_code=self.replay.exit_code, oom_killed=self.replay.oom_killed)

    def copy_out(self, path: str, dest_dir: Path, max_bytes: int | None = None) -> Path:
        if path not in self.replay.files:
            raise BuildError(f"{path} in the container is not a regular file")
        if max_bytes is not None and len(self.replay.files[path]) > max_bytes:
            raise LimitExceeded("artifacts", f"{path} is too big", max_bytes, "the budget")
        local = dest_dir / Path(path).name
        local.write_bytes(self.replay.files[path])
        local.chmod(0o755)
        return local

    @contextmanager
    def archive(self, path: str) -> Iterator[IO[bytes]]:
        """The tar the engine gives of a directory: itself (by its base name) first, then
        every file and symlink the replay left under it."""
        if not any(name.startswith(f"{path}/") for name in [*self.replay.files,
                                                            *self.replay.symlinks]):
            raise BuildError(f"{path} is not in the container")
        base = Path(path).name
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            root = tarfile.TarInfo(base)
            root.type = tarfile.DIRTYPE
            tar.addfile(root)
            for name, data in sorted(self.replay.files.items()):
                if name.startswith(f"{path}/"):
                    info = tarfile.TarInfo(base + name.removeprefix(path))
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            for name, target in sorted(self.replay.symlinks.items()):
                if name.startswith(f"{path}/"):
                    info = tarfile.TarInfo(base + name.removeprefix(path))
                    info.type, info.linkname = tarfile.SYMTYPE, target
                    tar.addfile(info)
        out.seek(0)
        yield out


class FakeShelf:
    """A volume as the paths written into it."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.puts = 0

    def names(self, folder: str) -> set[str]:
        return {name.split("/")[1] for name in self.files
                if name.startswith(f"{folder}/") and name.count("/") == 1}

    def put(self, tar: IO[bytes]) -> None:
        self.puts += 1
        with tarfile.open(fileobj=tar) as archive:
            for member in archive:
                data = archive.extractfile(member) if member.isfile() else None
                self.files[member.name] = data.read() if data else b""


class FakeCrates:
    """A registry serving `crates` (by "<name>-<version>"), checked as Registry checks."""

    def __init__(self, crates: dict[str, bytes] | None = None) -> None:
        self.crates = crates or {}
        self.downloaded: list[str] = []

    def download(self, crate: LockedCrate, dest: IO[bytes]) -> None:
        self.downloaded.append(crate.dirname)
        data = self.crates.get(crate.dirname)
        if data is None:
            raise DependencyError(f"{crate.name} {crate.version}: the registry answered 404")
        if hashlib.sha256(data).hexdigest() != crate.sha256:
            raise DependencyError(f"{crate.name} {crate.version}: not the sha256 in Cargo.lock")
        dest.write(data)


class FakeDocker:
    """A container engine whose containers replay `replays`, one per container, in order.
    Every image is present unless named in `missing`; `broken` is raised by every call."""

    def __init__(self, replays: Iterable[Replay] = (), missing: Iterable[str] = (),
                 broken: Exception | None = None, driver: str = "overlay2") -> None:
        self.replays = list(replays)
        self.driver = driver
        #: an image's id, where a test gives one (else sha256:0…0)
        self.image_ids: dict[str, str] = {}
        #: volumes fill_volumes() made: name -> (image, path)
        self.filled: dict[str, tuple[str, str]] = {}
        #: the images whose fill_volumes() raises this
        self.fill_fails: dict[str, Exception] = {}
        self.missing = set(missing)
        self.broken = broken
        #: each call's method name, in order
        self.calls: list[str] = []
        self.containers: list[FakeContainer] = []
        self.volumes: dict[str, dict[str, str]] = {}
        #: a volume's files on this host, by volume name (see copy_from_volume)
        self.volume_dirs: dict[str, Path] = {}
        self.removed: list[str] = []
        #: "<job>-<attempt>" of containers left over from an earlier life, for reap()
        self.leftovers: set[str] = set()
        #: each volume's size limit, by name (None: unlimited)
        self.sizes: dict[str, DiskSpec | None] = {}
        #: volumes volume_full() says are full
        self.full: set[str] = set()
        #: volumes written through shelf(), by name
        self.shelves: dict[str, FakeShelf] = {}
        #: volumes kept between jobs (warm target dirs), with their labels and sizes
        self.kept: dict[str, dict[str, str]] = {}
        self.kept_bytes: dict[str, int] = {}

    def _called(self, name: str) -> None:
        self.calls.append(name)
        if self.broken is not None:
            raise self.broken

    def has_image(self, name: str) -> bool:
        self._called("has_image")
        return name not in self.missing

    def image_id(self, name: str) -> str | None:
        self._called("image_id")
        return None if name in self.missing else self.image_ids.get(name, "sha256:" + "0" * 64)

    @contextmanager
    def volume(self, name: str, labels: dict[str, str], size: DiskSpec | None = None
               ) -> Iterator[str]:
        self._called("volume")
        self.volumes[name] = labels
        self.sizes[name] = size
        try:
            yield name
        finally:
            self.removed.append(name)

    def volume_full(self, name: str) -> bool:
        self._called("volume_full")
        return name in self.full

    def keep_volume(self, name: str, labels: dict[str, str]) -> None:
        self._called("keep_volume")
        self.kept.setdefault(name, labels)

    def volume_bytes(self, name: str) -> int | None:
        self._called("volume_bytes")
        return self.kept_bytes.get(name)

    def copy_from_volume(self, name: str, path: str, dest_dir: Path,
                         max_bytes: int | None = None) -> Path | None:
        """From `volume_dirs[name]` if the test gave one (a real directory, read as the
        Docker adapter reads a volume's); else None, as for an engine out of reach."""
        self._called("copy_from_volume")
        root = self.volume_dirs.get(name)
        return None if root is None else read_beneath(root, path, dest_dir, max_bytes)

    def volume_labels(self, name: str) -> dict[str, str] | None:
        self._called("volume_labels")
        if name in self.kept:
            return self.kept[name]
        return {} if name in self.shelves else None

    def remove_volume(self, name: str) -> None:
        self._called("remove_volume")
        self.shelves.pop(name, None)
        self.kept.pop(name, None)
        self.filled.pop(name, None)
        self.removed.append(name)

    def volumes_labelled(self, selector: str) -> dict[str, dict[str, str]]:
        self._called("volumes_labelled")
        name, _, value = selector.partition("=")
        return {volume: labels for volume, labels in self.kept.items()
                if labels.get(name) == value}

    def fill_volumes(self, image: str, mounts: dict[str, str], labels: dict[str, str]
                     ) -> None:
        self._called("fill_volumes")
        if image in self.fill_fails:
            raise self.fill_fails[image]
        for volume, path in mounts.items():
            self.kept[volume] = labels
            self.filled[volume] = (image, path)

    def storage_driver(self) -> str | None:
        self._called("storage_driver")
        return self.driver

    @contextmanager
    def container(self, step: Step) -> Iterator[FakeContainer]:
        self._called("container")
        if not self.replays:
            raise AssertionError(f"no recorded step left for {step.command}")
        container = FakeContainer(step, self.replays.pop(0))
        self.containers.append(container)
        try:
            yield container
        finally:
            self.removed.append(" ".join(step.command))

    @contextmanager
    def shelf(self, volume: str, image: str) -> Iterator[FakeShelf]:
        self._called("shelf")
        yield self.shelves.setdefault(volume, FakeShelf())

    def reap(self, worker: str, keep: Callable[[], set[str]]) -> int:
        self._called("reap")
        gone = self.leftovers - keep()
        self.leftovers -= gone
        return len(gone)


class FakeEventSink:
    """Keeps the log lines a job sends live."""

    def __init__(self) -> None:
        self.events: list[tuple[BuildId, str, str]] = []
        #: the texts alone
        self.lines: list[str] = []

    def line(self, build_id: BuildId, target: str, text: str) -> None:
        self.events.append((build_id, target, text))
        self.lines.append(text)


#: the lease secret FakeReporter answers every start with
FAKE_LEASE = "fake-lease-0123456789abcdefghijklmnopqrstuvw"


class FakeReporter(FakeEventSink):
    """The controller and event stream as a job and the heartbeat see them: says go ahead
    unless `proceed` is False, stops a job once `stop` is set, answers heartbeats with
    `replies` (an exception in them is raised) and then with plain acknowledgements."""

    def __init__(self, proceed: bool = True, stop: str | None = None,
                 replies: Iterable[HeartbeatReply | Exception] = ()) -> None:
        super().__init__()
        self.verdict = (StartVerdict(proceed=True, lease=FAKE_LEASE) if proceed
                        else StartVerdict(proceed=False, reason="stale"))
        self.stop = stop
        self.replies = list(replies)
        self.starts: list[tuple[JobId, JobStarted]] = []
        self.outcomes: list[tuple[JobId, JobFinished]] = []
        #: each heartbeat's description and fresh_start flag
        self.beats: list[tuple[WorkerHeartbeat, bool]] = []

    def started(self, job_id: JobId, report: JobStarted) -> StartVerdict:
        self.starts.append((job_id, report))
        return self.verdict

    def finished(self, job_id: JobId, report: JobFinished) -> None:
        self.outcomes.append((job_id, report))

    def stop_reason(self, job_id: JobId, attempt: int) -> str | None:
        return self.stop

    def heartbeat(self, name: str, info: WorkerHeartbeat, fresh_start: bool
                  ) -> HeartbeatReply:
        self.beats.append((info, fresh_start))
        reply = self.replies.pop(0) if self.replies else HeartbeatReply(drain=False)
        if isinstance(reply, Exception):
            raise reply
        return reply


#: the time FakeStorage's objects were written unless a test says otherwise
FAKE_NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeStorage:
    """An object store in a dict. A missing key is NotFound, as on S3; with `reads_fail`
    every read fails as an unreachable store does, while writes still land."""

    def __init__(self, objects: dict[str, bytes] | None = None,
                 pending: Iterable[PendingUpload] = (), reads_fail: bool = False) -> None:
        self.objects = dict(objects or {})
        self.pending = list(pending)
        self.reads_fail = reads_fail
        #: keys of the pending uploads aborted, in order
        self.aborted: list[str] = []
        #: when each object was written, as a listing shows it (FAKE_NOW if not set)
        self.modified: dict[str, datetime] = {}
        #: the sha256 each put_file was given, by key
        self.sha256s: dict[str, str] = {}

    def ensure_bucket(self) -> None:
        pass

    def store_tree(self, files: Mapping[str, bytes]) -> SourceDigest:
        """Store a source tree as the controller does (the tree, each blob alone) from
        {relative path: bytes}; returns its digest."""
        entries = []
        for path, data in sorted(files.items()):
            sha = hashlib.sha256(data).hexdigest()
            self.objects[keys.blob_key(sha)] = data
            entries.append(TreeEntry(path=path, kind="file", sha256=sha, size=len(data)))
        tree = SourceTree(entries=entries)
        digest = SourceDigest(tree_digest(tree))
        self.objects[keys.tree_key(digest)] = tree.model_dump_json().encode()
        self.objects[keys.locations_key(digest)] = b"{}"
        return digest

    def exists(self, key: str) -> bool:
        return key in self.objects

    def put_bytes(self, key: str, data: bytes,
                  content_type: str = "application/octet-stream") -> None:
        self.objects[key] = data

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        self.objects[key] = path.read_bytes()
        self.sha256s[key] = sha256

    def stat(self, key: str) -> StoredFile | None:
        if self.reads_fail:
            raise StorageError(f"object store unreachable ({key}): connection refused")
        if key not in self.objects:
            return None
        return StoredFile(size=len(self.objects[key]), sha256=self.sha256s.get(key))

    def get_bytes(self, key: str) -> bytes:
        if self.reads_fail:
            raise StorageError(f"object store unreachable ({key}): connection refused")
        if key not in self.objects:
            raise NotFound(f"no object {key!r} in storage")
        return self.objects[key]

    def download(self, key: str, path: Path) -> None:
        path.write_bytes(self.get_bytes(key))

    def presign_get(self, key: str, expires_s: int) -> str:
        return f"http://storage.invalid/{key}?expires={expires_s}"

    def pending_uploads(self, prefix: str) -> list[PendingUpload]:
        return [upload for upload in self.pending if upload.key.startswith(prefix)]

    def abort_upload(self, upload: PendingUpload) -> None:
        self.pending.remove(upload)
        self.aborted.append(upload.key)

    def list_objects(self, prefix: str) -> list[StoredObject]:
        return [StoredObject(key, len(data), self.modified.get(key, FAKE_NOW))
                for key, data in sorted(self.objects.items()) if key.startswith(prefix)]

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.objects.pop(key, None)
            self.sha256s.pop(key, None)


if TYPE_CHECKING:  # mypy holds each fake to its Protocol here
    from crossfarm.shared.storage import ObjectStore
    from crossfarm.worker.container import ContainerRunner, Shelf, StepContainer
    from crossfarm.worker.deps import CrateSource
    from crossfarm.worker.reporter import EventSink, HeartbeatReporter, JobReporter

    _runner: ContainerRunner = FakeDocker()
    _container: StepContainer = FakeContainer(Step("i", [], "/", "0", {}, False, {}), Replay())
    _sink: EventSink = FakeEventSink()
    _reporter: JobReporter = FakeReporter()
    _beats: HeartbeatReporter = FakeReporter()
    _storage: ObjectStore = FakeStorage()
    _shelf: Shelf = FakeShelf()
    _crates: CrateSource = FakeCrates()
