"""Every name the parts agree on: Celery queues and task names, Redis keys, S3 keys."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from crossfarm.shared.arch import Arch, BuildMode
from crossfarm.shared.ids import BuildId, JobId, SourceDigest

#: The Celery task that builds one target of one build.
BUILD_TASK = "crossfarm.build_job"
#: The Celery task that fetches one git commit in a sandbox, and its queue (any worker
#: consumes it, whatever its architecture).
FETCH_TASK = "crossfarm.fetch_git"
FETCH_QUEUE = "crossfarm.fetch"


@dataclass(frozen=True, order=True)
class QueueKey:
    """The Celery queue of `arch` targets built in `mode`: native workers of `arch` consume
    the plain one; workers that cross-compile or emulate for `arch` consume the others.
    On the wire it is its name."""

    arch: Arch
    mode: BuildMode = BuildMode.NATIVE

    @property
    def name(self) -> str:
        base = f"crossfarm.builds.{self.arch.value}"
        return base if self.mode is BuildMode.NATIVE else f"{base}.{self.mode.value}"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, name: str) -> QueueKey:
        """The queue a name stands for; ValueError for a name `.name` never makes."""
        parts = name.split(".")
        if len(parts) not in (3, 4) or parts[:2] != ["crossfarm", "builds"]:
            raise ValueError(f"{name!r} is not a crossfarm build queue")
        try:  # exact names only: no aliases, which .name never produces
            arch = Arch(parts[2])
        except ValueError:
            raise ValueError(f"{name!r}: unknown architecture {parts[2]!r}") from None
        try:
            mode = BuildMode(parts[3]) if len(parts) == 4 else BuildMode.NATIVE
        except ValueError:
            raise ValueError(f"{name!r}: unknown build mode {parts[3]!r}") from None
        if mode is BuildMode.NATIVE and len(parts) == 4:
            raise ValueError(f"{name!r} is not a crossfarm build queue")
        return cls(arch, mode)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        # A wire field or dict key typed QueueKey reads and writes the queue's name; the
        # return schema gives responses' OpenAPI schema (serialization mode) its type.
        return core_schema.no_info_plain_validator_function(
            cls._coerce, json_schema_input_schema=core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda key: key.name, return_schema=core_schema.str_schema()))

    @classmethod
    def _coerce(cls, value: object) -> QueueKey:
        if isinstance(value, QueueKey):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        raise ValueError(f"{value!r} is not a queue name")


def task_id(job_id: JobId, attempt: int) -> str:
    """The Celery task id of one attempt of a job: "<job id>-<attempt>". Workers list the
    ones they run in their heartbeat; the controller reads a job's lease from it."""
    return f"{job_id}-{attempt}"


def parse_task_id(text: str) -> tuple[JobId, int]:
    """The job and attempt a task id names (inverse of task_id)."""
    job, _, number = text.rpartition("-")
    if not job or not (number.isascii() and number.isdigit()):
        raise ValueError(f"{text!r} is not a crossfarm task id")
    return JobId(job), int(number)


#: Every container and volume crossfarm makes carries this label.
LABEL = "io.crossfarm"
_JOB_LABEL = "io.crossfarm.job"
_ATTEMPT_LABEL = "io.crossfarm.attempt"
_WORKER_LABEL = "io.crossfarm.worker"
#: a warm target dir's volume carries this label (with its worker's name), and no job's:
#: the reaper, which removes a worker's volumes of jobs no longer running, passes it by
_WARM_LABEL = "io.crossfarm.warm"
#: a deps volume a worker made carries a random id here: what the worker remembers of
#: the volume's entries holds for that very volume only, not one made again by its name
_DEPS_LABEL = "io.crossfarm.deps"
#: a builder image's copied trees (worker/image_volumes.py): the image's id, and its name
_IMAGE_ID_LABEL = "io.crossfarm.image-id"
_IMAGE_LABEL = "io.crossfarm.image"


def container_labels(job_id: JobId, attempt: int, worker: str) -> dict[str, str]:
    """The labels of one attempt's containers and volume, so a worker can find its
    leftovers after a crash and tell them from the builds it still runs."""
    return {LABEL: "1", _JOB_LABEL: job_id, _ATTEMPT_LABEL: str(attempt), _WORKER_LABEL: worker}


def affinity_key(tenant: str, project: str, target: str, profile: str) -> str:
    """What a worker reports of a warm target dir it keeps, and what the placer looks for
    to send a build of that project back to it: a hash, so heartbeats name no project."""
    text = json.dumps([tenant, project, target, profile])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


#: where every tenant's compile caches live (CompileCacheKey)
COMPILE_CACHE_PREFIX = "compile-cache/"


@dataclass(frozen=True)
class CompileCacheKey:
    """Whose compile cache (worker/compile_cache.py) an object holds: one copy per tenant,
    project, target, profile and builder image id, under one prefix per tenant (an
    operator drops a tenant's whole cache at once). The names are hashes: no field can
    shape a key or reach another tenant's prefix, and no project is named in clear."""

    tenant: str
    project: str
    target: str
    profile: str
    #: the builder image's id: a rebuilt toolchain starts a new cache
    image_id: str

    def tenant_prefix(self) -> str:
        return f"{COMPILE_CACHE_PREFIX}{_tenant_dir(self.tenant)}/"

    def prefix(self) -> str:
        scope = json.dumps([self.tenant, self.project, self.target, self.profile,
                            self.image_id])
        return f"{self.tenant_prefix()}{hashlib.sha256(scope.encode()).hexdigest()[:32]}/"

    def archive(self) -> str:
        """The cache dir's files, as one tar."""
        return f"{self.prefix()}cache.tar"

    def manifest(self) -> str:
        """The archive's sha256, size and file count, written after it by the worker."""
        return f"{self.prefix()}manifest.json"


def _tenant_dir(tenant: str) -> str:
    """A tenant's folder name under a per-tenant prefix: a hash, so no tenant name shapes
    a key or is stored in clear."""
    return hashlib.sha256(json.dumps([tenant]).encode()).hexdigest()[:32]


def held_artifact_key(tenant: str, sha256: str) -> str:
    """Which stored artifact of `tenant` has these bytes (written by the worker once a
    job that uploaded it succeeded; worker/artifacts.py): a later build of the same
    tenant with an identical file names that object instead of uploading it again. One
    prefix per tenant: a lookup never reaches another tenant's artifacts."""
    return f"held-artifacts/{_tenant_dir(tenant)}/{sha256[:2]}/{sha256}.json"


def worker_queue(queue: QueueKey, worker: str) -> str:
    """The queue only `worker` consumes beside `queue`: jobs sent back to the worker
    that keeps their project's warm target dir."""
    return f"{queue.name}@{worker}"


def shared_queue(name: str) -> str:
    """The queue a worker's own queue (see worker_queue) stands beside; other names as
    they are (no queue name of ours holds an "@" otherwise)."""
    return name.split("@", 1)[0]


def warm_labels(worker: str) -> dict[str, str]:
    """The labels of a warm target dir's volume, kept between jobs (worker/warm.py)."""
    return {LABEL: "1", _WARM_LABEL: worker}


def deps_labels(volume_id: str) -> dict[str, str]:
    """The labels of a deps volume a worker makes (worker/deps.py)."""
    return {LABEL: "1", _DEPS_LABEL: volume_id}


def image_volume_labels(image: str, image_id: str) -> dict[str, str]:
    """The labels of the volumes holding a builder image's trees (worker/image_volumes.py)."""
    return {LABEL: "1", _IMAGE_LABEL: image, _IMAGE_ID_LABEL: image_id}


def image_volume_selector(image: str) -> str:
    """The engine's label filter for every copy of an image's trees, of any id."""
    return f"{_IMAGE_LABEL}={image}"


def labelled_image_id(labels: dict[str, str]) -> str | None:
    """The image id an image volume was copied from."""
    return labels.get(_IMAGE_ID_LABEL) or None


def labelled_deps_id(labels: dict[str, str]) -> str | None:
    """A deps volume's id; None for one made without (by an older worker, or by the
    engine when a container first mounted it)."""
    return labels.get(_DEPS_LABEL) or None


def fetch_task_id(fetch_id: str) -> str:
    """The Celery task id of a git fetch, shaped as a task id so the reaper keeps its
    containers while it runs."""
    return task_id(JobId(f"fetch-{fetch_id}"), 1)


def fetch_labels(fetch_id: str, worker: str) -> dict[str, str]:
    """The labels of a git fetch's containers and volume (see container_labels)."""
    return container_labels(JobId(f"fetch-{fetch_id}"), 1, worker)


def fetch_reply(fetch_id: str) -> str:
    """The Redis list a worker pushes a git fetch's report to; the controller waits on it."""
    return f"crossfarm:fetch:{fetch_id}:reply"


def worker_selector(worker: str) -> list[str]:
    """The Docker label filter that finds every container and volume of one worker."""
    return [f"{LABEL}=1", f"{_WORKER_LABEL}={worker}"]


def labelled_worker(labels: dict[str, str]) -> str | None:
    """The worker a labelled container or volume belongs to, or None."""
    return labels.get(_WORKER_LABEL)


def labelled_task(labels: dict[str, str]) -> str | None:
    """The task id (see task_id) a labelled container or volume belongs to, or None."""
    job, attempt = labels.get(_JOB_LABEL), labels.get(_ATTEMPT_LABEL)
    return f"{job}-{attempt}" if job and attempt else None


def events_stream(build_id: BuildId) -> str:
    """The Redis stream holding a build's log lines and state changes, in order."""
    return f"crossfarm:build:{build_id}:events"


def events_bytes(build_id: BuildId) -> str:
    """The Redis counter of the bytes appended to a build's event stream."""
    return f"crossfarm:build:{build_id}:events-bytes"


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
