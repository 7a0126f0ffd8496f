"""Every name the parts agree on: Celery queues and task names, Redis keys, S3 keys."""

from __future__ import annotations

from crossfarm.shared.arch import Arch, BuildMode
from crossfarm.shared.ids import BuildId, JobId, SourceDigest

#: The one Celery task a worker runs: build one target of one build.
BUILD_TASK = "crossfarm.build_job"


def queue_name(arch: Arch, mode: BuildMode = BuildMode.NATIVE) -> str:
    """The Celery queue of `arch` targets built in `mode`: native workers of `arch` consume
    the plain one; workers that cross-compile or emulate for `arch` consume the others."""
    base = f"crossfarm.builds.{arch.value}"
    return base if mode is BuildMode.NATIVE else f"{base}.{mode.value}"


def parse_queue(queue: str) -> tuple[Arch, BuildMode]:
    """The architecture and mode a queue name stands for (inverse of queue_name)."""
    parts = queue.split(".")
    if len(parts) not in (3, 4) or parts[:2] != ["crossfarm", "builds"]:
        raise ValueError(f"{queue!r} is not a crossfarm build queue")
    try:  # exact names only: no aliases, which queue_name never produces
        arch = Arch(parts[2])
    except ValueError:
        raise ValueError(f"{queue!r}: unknown architecture {parts[2]!r}") from None
    try:
        mode = BuildMode(parts[3]) if len(parts) == 4 else BuildMode.NATIVE
    except ValueError:
        raise ValueError(f"{queue!r}: unknown build mode {parts[3]!r}") from None
    if mode is BuildMode.NATIVE and len(parts) == 4:
        raise ValueError(f"{queue!r} is not a crossfarm build queue")
    return arch, mode


def events_stream(build_id: BuildId) -> str:
    """The Redis stream holding a build's log lines and state changes, in order."""
    return f"crossfarm:build:{build_id}:events"


def cancel_flag(job_id: JobId) -> str:
    """The Redis key a worker polls to learn that its running job was cancelled."""
    return f"crossfarm:job:{job_id}:cancel"


def attempt_key(job_id: JobId) -> str:
    """The Redis key holding a job's current attempt (its fencing token)."""
    return f"crossfarm:job:{job_id}:attempt"


def blob_key(digest: str) -> str:
    """A file's bytes, stored once whatever tree or build uses them."""
    return f"blobs/{digest[:2]}/{digest}"


def pack_key(digest: str) -> str:
    """Many small blobs uploaded together, stored as the one pack they came in."""
    return f"packs/{digest[:2]}/{digest}.tar.gz"


def tree_key(digest: SourceDigest) -> str:
    return f"trees/{digest}.json"


def locations_key(digest: SourceDigest) -> str:
    """Which pack holds each blob of a tree (blobs stored alone are not listed)."""
    return f"trees/{digest}.locations.json"


def job_prefix(build_id: BuildId, target: str, attempt: int) -> str:
    """Where one attempt of one target's outputs live; attempts never share a prefix."""
    return f"builds/{build_id}/{target}/attempt-{attempt}/"


def artifact_key(build_id: BuildId, target: str, attempt: int, name: str) -> str:
    return f"{job_prefix(build_id, target, attempt)}artifacts/{name}"


def manifest_key(build_id: BuildId, target: str, attempt: int) -> str:
    return f"{job_prefix(build_id, target, attempt)}manifest.json"


def log_key(build_id: BuildId, target: str, attempt: int) -> str:
    return f"{job_prefix(build_id, target, attempt)}build.log"


def parse_job_key(key: str) -> tuple[BuildId, str, int]:
    """The build, target and attempt an output key (under job_prefix) belongs to."""
    parts = key.split("/")
    if len(parts) < 5 or parts[0] != "builds" or not parts[3].startswith("attempt-"):
        raise ValueError(f"{key!r} is not a build output key")
    number = parts[3].removeprefix("attempt-")
    if not (number.isascii() and number.isdigit()) or number.startswith("0"):
        raise ValueError(f"{key!r}: bad attempt {parts[3]!r}")
    return BuildId(parts[1]), parts[2], int(number)
