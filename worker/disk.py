"""Job disks: the hard budget of a job's writable space, as a filesystem of that size.

    <dir>/crossfarm-disk-<worker tag>-<job>-<attempt>.img   sparse file, size = budget
      └─ /dev/loopN (losetup)       attached before mkfs: a crash after the first
           │                        microseconds leaves a loop device the reaper finds
           └─ ext4 (no journal, no reserved blocks, root owned by the build user)
                └─ a Docker local volume (type=ext4, device=/dev/loopN) at /work

Why a loop-mounted filesystem: the source goes into /work through the engine before
the container starts, so the space must exist first (a container tmpfs does not, and
its pages would count against the build's memory); Docker's local driver refuses
`o=loop` here, so the worker (root) attaches the loop device itself; the kernel then
stops every write at the budget (ENOSPC), with no polling and no race, whatever the
worker's own filesystem is (an XFS project quota needs XFS under the scratch dir). The
file is sparse: the worker's disk holds only what the build wrote, never more than the
budget, and all of it goes when the file is deleted.

Each call runs a util-linux or e2fsprogs tool; their failures become DiskError.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from crossfarm.shared.errors import BuildError

_PREFIX = "crossfarm-disk-"
#: A disk this close to its size counts as full (ext4 keeps some blocks for itself).
_FULL_SLACK = 0.03
_FULL_SLACK_MIN = 4 * 1024**2


class DiskError(BuildError):
    """A job disk could not be made or inspected; the message names the tool."""


@dataclass(frozen=True)
class DiskSpec:
    """What a job's writable space must be: its size, where its image file goes, and
    the owner of its root directory (the build user)."""

    size_bytes: int
    directory: Path
    owner_uid: int


@dataclass(frozen=True)
class JobDisk:
    """One attached job disk."""

    image: Path
    device: str
    #: "<job>-<attempt>", the task whose disk it is
    task: str


def attach(spec: DiskSpec, worker: str, task: str) -> JobDisk:
    """Make and attach the disk of one task; see the module's picture."""
    spec.directory.mkdir(parents=True, exist_ok=True)
    image = spec.directory / f"{_PREFIX}{_tag(worker)}-{task}.img"
    with image.open("wb") as sparse:
        sparse.truncate(spec.size_bytes)
    try:
        device = _run("losetup", "--find", "--show", str(image)).strip()
    except DiskError:
        image.unlink(missing_ok=True)
        raise
    disk = JobDisk(image, device, task)
    try:
        owner = f"{spec.owner_uid}:{spec.owner_uid}"
        # No journal: the filesystem is thrown away with the job, and a journal would
        # take real bytes of the worker's disk up front.
        _run("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
             "-E", f"root_owner={owner},nodiscard", device)
    except DiskError:
        release(disk)
        raise
    return disk


def release(disk: JobDisk) -> None:
    """Detach the loop device and delete the image (its bytes go with it)."""
    with suppress(DiskError):  # already gone; a mounted one is detached once unmounted
        _run("losetup", "--detach", disk.device)
    disk.image.unlink(missing_ok=True)


def is_full(disk: JobDisk, size_bytes: int) -> bool:
    """Whether the filesystem has (nearly) no free blocks left."""
    return free_bytes(disk.device) < full_below(size_bytes)


def full_below(size_bytes: int) -> int:
    """A disk of `size_bytes` with fewer free bytes than this is full: ext4 keeps a few
    blocks it never hands out, so a write stops with ENOSPC before free reaches 0."""
    return max(_FULL_SLACK_MIN, int(size_bytes * _FULL_SLACK))


def free_bytes(device: str) -> int:
    """The free bytes of the ext4 filesystem on `device`, from its superblock."""
    return free_in_header(_run("dumpe2fs", "-h", device))


def free_in_header(header: str) -> int:
    """The free bytes `dumpe2fs -h` reports."""
    fields = dict(re.findall(r"^([A-Za-z ]+):\s+(\d+)$", header, re.MULTILINE))
    try:
        return int(fields["Free blocks"]) * int(fields["Block size"])
    except KeyError:
        raise DiskError("dumpe2fs -h: no free block count in its answer") from None


def attached(worker: str) -> list[JobDisk]:
    """The job disks of `worker` attached on this host (found by their image's name,
    wherever the image is, and whether or not it still exists). None without losetup:
    a worker that cannot make job disks has none."""
    if shutil.which("losetup") is None:
        return []
    return in_listing(_run("losetup", "--list", "--json", "--output", "NAME,BACK-FILE"),
                      worker)


def in_listing(answer: str, worker: str) -> list[JobDisk]:
    """The job disks of `worker` in what `losetup --list --json` answered."""
    return list(_ours(json.loads(answer or "{}").get("loopdevices", []),
                      f"{_PREFIX}{_tag(worker)}-"))


def _ours(devices: Iterable[dict[str, str]], prefix: str) -> Iterable[JobDisk]:
    for device in devices:
        back = (device.get("back-file") or "").removesuffix(" (deleted)")
        name = Path(back).name
        if name.startswith(prefix) and name.endswith(".img"):
            yield JobDisk(Path(back), device["name"], name[len(prefix):-len(".img")])


def _tag(worker: str) -> str:
    # Worker names are free-form; a hash is a safe file name part of fixed length.
    return hashlib.sha256(worker.encode()).hexdigest()[:16]


def _run(*command: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiskError(f"disk: {command[0]} failed: {exc}") from exc
    if done.returncode != 0:
        raise DiskError(f"disk: {' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout
