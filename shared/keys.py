"""Every name the parts agree on: Celery queues and task names, Redis keys, S3 keys."""

from __future__ import annotations

from crossfarm.shared.arch import Arch
from crossfarm.shared.ids import BuildId, JobId, SourceDigest

#: The one Celery task a worker runs: build one target of one build.
BUILD_TASK = "crossfarm.build_job"


def queue_name(arch: Arch) -> str:
    """The Celery queue that workers of `arch` consume."""
    return f"crossfarm.builds.{arch.value}"


def events_stream(build_id: BuildId) -> str:
    """The Redis stream holding a build's log lines and state changes, in order."""
    return f"crossfarm:build:{build_id}:events"


def cancel_flag(job_id: JobId) -> str:
    """The Redis key a worker polls to learn that its running job was cancelled."""
    return f"crossfarm:job:{job_id}:cancel"


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
