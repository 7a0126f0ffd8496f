"""One job, as a readable list of steps:

    report start → fetch source → [make a Cargo.lock: network on, no crate config]
    → registry crates into the verified deps volume (the worker's own downloads)
    → cargo build (network off) → copy artifacts out → upload artifacts
    → write manifest last → store the log → report the outcome

No code of the crate runs while a network is reachable: the only networked step
resolves a lock file with none of the crate's configuration, and dependencies are
fetched by the worker (worker/deps.py), not by cargo.

Expected failures (cargo errors, timeouts, cancels, storage) become the job's
outcome; they are data, not crashes.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from crossfarm.shared import keys
from crossfarm.shared.arch import Arch, BuildMode, target_arch
from crossfarm.shared.errors import (
    BuildCancelled,
    BuildError,
    BuildTimeout,
    Conflict,
    LeaseLost,
    LimitExceeded,
    StorageError,
)
from crossfarm.shared.ids import SourceDigest
from crossfarm.shared.states import BuildState
from crossfarm.shared.storage import ObjectStore
from crossfarm.shared.tree import TreeLimits
from crossfarm.shared.wire import (
    EndState,
    JobFinished,
    JobMessage,
    JobStarted,
    Manifest,
    SourceTree,
)
from crossfarm.worker import cargo, deps
from crossfarm.worker.artifacts import ArtifactCollector, JobOutput, build_manifest
from crossfarm.worker.container import ContainerRunner, Step, StepContainer, StopCheck
from crossfarm.worker.deps import CrateSource, DependencyCache
from crossfarm.worker.disk import DiskSpec
from crossfarm.worker.images import BUILD_UID, builder_image, job_mode, served_queues
from crossfarm.worker.joblog import JobLog
from crossfarm.worker.lease import Lease
from crossfarm.worker.reporter import JobReporter
from crossfarm.worker.retrying import Retry
from crossfarm.worker.settings import WorkerSettings
from crossfarm.worker.source import (
    cache_lock,
    container_tar,
    fetch_blobs,
    fetch_tree,
    trim_cache,
)

log = logging.getLogger(__name__)

_CA_IN_CONTAINER = "/etc/crossfarm/ca.crt"
#: Blobs used this recently are kept even over budget: the next build of the same crate
#: is likely to want them. (A build reading the cache holds cache_lock; trims wait.)
_BLOB_IN_USE_S = 600


@dataclass(frozen=True)
class Toolbox:
    """The adapters a job uses; built once per worker process."""

    settings: WorkerSettings
    host: Arch
    docker: ContainerRunner
    storage: ObjectStore
    reporter: JobReporter
    #: where registry crates come from (verified against Cargo.lock on download)
    crates: CrateSource
    #: None: the lease is never checked (a worker without a heartbeat, in tests)
    lease: Lease | None = None


class Ending(Protocol):
    """Makes the outcome report of the attempt being run (it holds the attempt's lease)."""

    def __call__(self, state: EndState, exit_code: int | None = None,
                 reason: str | None = None, manifest: Manifest | None = None
                 ) -> JobFinished: ...


@dataclass(frozen=True)
class JobRun:
    """One attempt of one job on this worker: what each of its steps reads."""

    tools: Toolbox
    job: JobMessage
    image: str
    log: JobLog
    deadline: float
    #: cancelled or superseded? built once per job; see _stop_check
    stop: StopCheck

    @property
    def settings(self) -> WorkerSettings:
        return self.tools.settings

    @property
    def labels(self) -> dict[str, str]:
        """The labels of its containers and volume, by which leftovers are reaped."""
        return keys.container_labels(self.job.job_id, self.job.attempt,
                                     self.settings.worker_name)

    @property
    def volume(self) -> str:
        return f"crossfarm-{self.job.job_id}-a{self.job.attempt}"


def run_job(tools: Toolbox, job: JobMessage, consumed_from: str) -> BuildState | None:
    """Run one job end to end; returns its final state, or None if the farm said not to run it."""
    job_id = job.job_id
    settings = tools.settings
    refusal: str | None = None
    served = served_queues(tools.host, settings.cross_arches, settings.emulate_arches)
    image = settings.builder_image
    try:
        mode = job_mode(job.target, consumed_from, served)
        image = builder_image(mode, target_arch(job.target), image, settings.emulation_images)
    except BuildError as exc:
        mode, refusal = _queue_mode(consumed_from), exc.message
    verdict = tools.reporter.started(job_id, JobStarted(
        attempt=job.attempt, worker=tools.settings.worker_name,
        hostname=tools.settings.hostname(), mode=mode, consumed_from=consumed_from,
    ))
    if not verdict.proceed:
        log.info("job %s not run: %s", job_id, verdict.reason)
        return None
    if verdict.lease is None:  # a controller older than leases: no outcome could be reported
        log.warning("job %s not run: the controller gave no lease to report it with", job_id)
        return None
    # The lease proves this worker started the attempt: held here only, in memory, and
    # sent back with the outcome (never to the container, its env or the job's log).
    lease = verdict.lease

    def ended(state: EndState, exit_code: int | None = None, reason: str | None = None,
              manifest: Manifest | None = None) -> JobFinished:
        return JobFinished(attempt=job.attempt, worker=settings.worker_name, lease=lease,
                           state=state, exit_code=exit_code, reason=reason, manifest=manifest)
    joblog = JobLog(tools.reporter, job.build_id, job.target, list(job.env.values()),
                    settings.log_max_bytes)
    joblog(f"crossfarm: {job.target} on {tools.settings.worker_name} "
           f"({tools.host.value}, {mode.value}), attempt {job.attempt}")
    try:
        outcome = (ended(state=BuildState.FAILED, reason=refusal)
                   if refusal else _build(tools, job, image, joblog, ended))
    except LeaseLost as exc:  # its container is gone; the controller re-runs the job
        log.warning("job %s attempt %d abandoned: %s", job_id, job.attempt, exc.message)
        joblog(f"crossfarm: abandoned: {exc.message}")
        _store_log(tools.storage, job, joblog)
        return None
    if outcome.reason:
        joblog(f"crossfarm: {outcome.state.value}: {outcome.reason}")
    _store_log(tools.storage, job, joblog)
    try:
        tools.reporter.finished(job_id, outcome)
    except Conflict as exc:  # a newer attempt owns the job now: this outcome is void
        log.warning("job %s attempt %d: outcome dropped: %s", job_id, job.attempt, exc.message)
        return None
    return outcome.state


def _queue_mode(queue: str) -> BuildMode:
    """The mode a queue stands for, to report with a refusal; native if it is not ours."""
    try:
        return keys.QueueKey.parse(queue).mode
    except ValueError:
        return BuildMode.NATIVE


def _build(tools: Toolbox, job: JobMessage, image: str, joblog: JobLog,
           ended: Ending) -> JobFinished:
    """Build and publish; `ended` makes the outcome to report (it holds the lease)."""
    run = JobRun(tools, job, image, joblog, deadline=time.monotonic() + job.timeout_s,
                 stop=_stop_check(tools, job))
    try:
        manifest = _compile_and_publish(run)
    except BuildCancelled as exc:
        return ended(state=BuildState.CANCELLED, reason=exc.message)
    except BuildTimeout:
        return ended(state=BuildState.FAILED,
                     reason=f"timeout: the build ran past {job.timeout_s} s and was killed")
    except BuildError as exc:
        return ended(state=BuildState.FAILED, exit_code=exc.exit_code, reason=exc.message)
    except LeaseLost:
        raise  # not an outcome: the job belongs to another attempt now
    except StorageError as exc:
        advice = ("retryable: resubmit once the object store is back" if exc.retryable
                  else "the stored source is damaged; an operator should check the object "
                       "store")
        return ended(state=BuildState.FAILED, reason=f"storage: {exc.message}; {advice}")
    except Exception as exc:  # a bug or an engine failure must still end the job as data
        log.exception("job %s failed on this worker", job.job_id)
        return ended(state=BuildState.FAILED,
                     reason=f"worker error: {type(exc).__name__}: {exc}")
    return ended(state=BuildState.SUCCEEDED, exit_code=0, manifest=manifest)


def _compile_and_publish(run: JobRun) -> Manifest:
    tools, job, settings = run.tools, run.job, run.settings
    settings.scratch_dir.mkdir(parents=True, exist_ok=True)
    if not tools.docker.has_image(run.image):
        raise BuildError(f"builder image {run.image} is missing on this worker; "
                         "build it with deploy/images/builder/build-offline.sh")
    # Named in the manifest: the result cache serves these artifacts only where this
    # image would build them again.
    image_id = tools.docker.image_id(run.image)
    retry = Retry(window_s=settings.storage_retry_s, deadline=run.deadline, stop=run.stop,
                  say=run.log)
    with tempfile.TemporaryDirectory(dir=settings.scratch_dir) as scratch:
        with run.log.timed("source download and check"):
            # the limits the controller accepted the tree under; defaults from an older one
            limits = TreeLimits.of(job.limits) if job.limits else TreeLimits()
            source = job.source
            tree = retry.run("source download", lambda: fetch_tree(tools.storage, source, limits))
            tar = _source_tar(run, retry, source, tree, limits)
        lock = _lock_file(run, tree)
        with tar:
            with run.log.timed("dependencies"):
                vendored = _dependencies(run, tree, lock, Path(scratch))
            with vendored, tools.docker.volume(run.volume, run.labels, _disk(run)):
                files = _compile(run, lock is not None, [tar, vendored], Path(scratch))
        with run.log.timed("artifact upload"):
            return retry.run("artifact upload", lambda: _publish(
                tools.storage, job, files, run.stop, image_id))


def _source_tar(run: JobRun, retry: Retry, source: SourceDigest, tree: SourceTree,
                limits: TreeLimits) -> IO[bytes]:
    """The tree as the container's tar, its blobs from this worker's cache (fetched if
    missing); then the cache is trimmed to its budget, unless another build reads it."""
    cache = run.settings.scratch_dir / "blobs"
    with cache_lock(cache):
        fetched = retry.run("source download", lambda: fetch_blobs(
            run.tools.storage, source, tree, cache, limits))
        run.log(f"crossfarm: {len(tree.entries)} files, {fetched} blob(s) not cached here")
        tar = container_tar(tree, cache, "src", BUILD_UID)
    with cache_lock(cache, exclusive=True) as alone:
        removed, freed = (trim_cache(cache, run.settings.blob_cache_bytes, _BLOB_IN_USE_S)
                          if alone else (0, 0))
    if removed:
        run.log(f"crossfarm: blob cache trimmed to its budget: {removed} file(s), "
                f"{freed} bytes freed")
    return tar


def _lock_file(run: JobRun, tree: SourceTree) -> bytes | None:
    """The crate's own Cargo.lock (from the blob cache), or None if it has none."""
    entry = next((e for e in tree.entries if e.path == "Cargo.lock" and e.kind == "file"), None)
    if entry is None:
        return None
    cache = run.settings.scratch_dir / "blobs"
    with cache_lock(cache):
        return (cache / (entry.sha256 or "")).read_bytes()


def _dependencies(run: JobRun, tree: SourceTree, lock: bytes | None, scratch: Path
                  ) -> IO[bytes]:
    """Every registry crate of the lock file in the deps volume; returns the tar of the
    job's vendor links and cargo home (and of the Cargo.lock made, if it had none)."""
    made = None
    if lock is None:
        lock = made = _make_lock(run, tree, scratch)
    try:
        crates = deps.locked_crates(lock.decode("utf-8"))
    except UnicodeDecodeError:
        raise deps.DependencyError("Cargo.lock is not UTF-8 text") from None
    cache = DependencyCache(
        runner=run.tools.docker, crates=run.tools.crates, volume=run.settings.deps_volume,
        image=run.image, lock_path=run.settings.scratch_dir / "deps.lock", scratch=scratch)
    fetched = cache.provide(crates, run.log)
    run.log(f"crossfarm: {len(crates)} crate(s) from the verified dependency volume, "
            f"{fetched} downloaded now")
    out = tempfile.TemporaryFile(dir=scratch)  # noqa: SIM115 - the caller closes it
    deps.vendor_tar(crates, BUILD_UID, out, lock_file=made)
    out.seek(0)
    return out


def _make_lock(run: JobRun, tree: SourceTree, scratch: Path) -> bytes:
    """A Cargo.lock for a crate that has none: cargo resolves the manifests against the
    registry's index with the network on, so the crate's own configuration (.cargo/,
    which may name programs for cargo to run) is left out of that step."""
    cache = run.settings.scratch_dir / "blobs"
    with cache_lock(cache):
        tar = container_tar(tree, cache, "src", BUILD_UID,
                            keep=lambda path: ".cargo" not in path.split("/"))
    step = _step(run, cargo.LOCK_COMMAND, network=True)
    with (tar, run.log.timed("Cargo.lock step (network on, no crate configuration)"),
          run.tools.docker.container(step) as container):
        container.put(cargo.WORK, tar)
        result = container.run(lambda _s, line: run.log(line), run.deadline, run.stop)
        if result.exit_code != 0:
            raise BuildError("making a Cargo.lock failed (see the log above); commit one "
                             "to build exactly what you tested", exit_code=result.exit_code)
        made = container.copy_out(f"{cargo.SRC}/Cargo.lock", scratch)
    run.log("crossfarm: no Cargo.lock in the source: made one with the newest compatible "
            "versions")
    return made.read_bytes()


def _compile(run: JobRun, locked: bool, inputs: list[IO[bytes]], tmp: Path) -> list[Path]:
    """The build step, network off: `inputs` (tars) go into the job volume first."""
    settings = run.settings
    collector = ArtifactCollector(cargo.TARGET_DIR, settings.artifact_max_count)

    def sink(stream: str, line: str) -> None:
        if stream == "stdout" and collector.feed(line):
            return
        run.log.output(line)

    def stop() -> str | None:
        run.log.check()  # output past the log budget stops the build (LimitExceeded)
        return run.stop()

    jobs = max(1, int(settings.build_cpus))
    step = _step(run, cargo.build_command(run.job, locked, jobs), network=False)
    with run.log.timed("build step"), run.tools.docker.container(step) as container:
        for tar in inputs:
            container.put(cargo.WORK, tar)
        result = container.run(sink, run.deadline, stop, max_line=settings.log_line_max_bytes)
        run.log.check()
        if result.oom_killed:
            raise BuildError("out-of-memory: the build container hit its memory limit of "
                             f"{settings.build_memory_bytes} bytes", exit_code=result.exit_code)
        if result.exit_code != 0 and run.tools.docker.volume_full(run.volume):
            raise LimitExceeded("disk", "the job's writable space of "
                                f"{settings.job_disk_bytes} bytes is full", settings.job_disk_bytes,
                                "CROSSFARM_JOB_DISK_BYTES")
        collector.check()
        if result.exit_code != 0:
            raise BuildError(f"cargo build failed with exit code {result.exit_code}",
                             exit_code=result.exit_code)
        out = tmp / "artifacts"
        out.mkdir()
        return _copy_artifacts(container, collector.paths, out, settings.artifact_max_bytes)


def _disk(run: JobRun) -> DiskSpec | None:
    """The job volume's hard size (CROSSFARM_JOB_DISK_BYTES; 0: a plain volume)."""
    size = run.settings.job_disk_bytes
    return DiskSpec(size, run.settings.scratch_dir / "disks", BUILD_UID) if size else None


def _copy_artifacts(container: StepContainer, paths: list[str], out: Path, budget: int
                    ) -> list[Path]:
    """Each artifact streamed to `out`, refused (LimitExceeded) before its bytes are
    read if it is bigger than what is left of the job's artifact budget."""
    files = []
    for path in paths:
        local = container.copy_out(path, out, max_bytes=budget)
        budget -= local.stat().st_size
        files.append(local)
    return files


def _stop_check(tools: Toolbox, job: JobMessage) -> StopCheck:
    """Polled while a container runs (and while a storage step waits): cancelled, or
    superseded by a newer attempt? Raises LeaseLost once this worker has been cut off
    from the controller for so long that the job runs elsewhere."""
    def check() -> str | None:
        if tools.lease is not None and (lapsed := tools.lease.lapsed()):
            raise LeaseLost(lapsed)
        return tools.reporter.stop_reason(job.job_id, job.attempt)

    return check


def _step(run: JobRun, command: list[str], network: bool) -> Step:
    """The build step (network off: the job volume, the deps volume read-only, the
    request's variables) or the lock step (network on: none of those)."""
    settings = run.settings
    binds, volumes, readonly = {}, {}, {}
    if network:
        env = {"CARGO_HOME": "/tmp/cargo-home"}
        if settings.ca_bundle is not None:
            binds[settings.ca_bundle] = _CA_IN_CONTAINER
            env["CARGO_HTTP_CAINFO"] = _CA_IN_CONTAINER
    else:
        env = {**run.job.env, "CARGO_TARGET_DIR": cargo.TARGET_DIR,
               "CARGO_HOME": f"{cargo.WORK}/{deps.CARGO_HOME}"}
        volumes, readonly = {run.volume: cargo.WORK}, {settings.deps_volume: deps.DEPS}
    return Step(
        image=run.image, command=command, workdir=cargo.SRC,
        user=f"{BUILD_UID}:{BUILD_UID}", env=env, network=network,
        volumes=volumes, readonly_volumes=readonly, binds=binds,
        cpus=settings.build_cpus, memory_bytes=settings.build_memory_bytes,
        pids=settings.build_pids, labels=run.labels, tmpfs_bytes=settings.build_tmpfs_bytes,
        # the lock step runs no crate code, and its source goes into the image's /work
        writable_root=network,
    )


def _publish(storage: ObjectStore, job: JobMessage, files: list[Path],
             stop: StopCheck, image_id: str | None = None) -> Manifest:
    """Upload every artifact under this attempt's prefix, then the manifest, last: the
    manifest is what publishes. A job cancelled or superseded while its artifacts were
    uploading (`stop` says so) writes none. An earlier try's unfinished multipart
    uploads (the store went away mid-upload, so they could not be aborted then) are
    aborted first."""
    output = JobOutput(build_id=job.build_id, job_id=job.job_id, target=job.target,
                       attempt=job.attempt, profile=job.cargo.profile, image_id=image_id)
    for pending in storage.pending_uploads(keys.job_prefix(output.build_id, job.target,
                                                          job.attempt)):
        storage.abort_upload(pending)
    manifest = build_manifest(output, files)
    by_name = {path.name: path for path in files}
    for entry in manifest.artifacts:
        storage.put_file(entry.key, by_name[entry.name], entry.sha256)
    if reason := stop():
        raise BuildCancelled(reason)
    storage.put_bytes(keys.manifest_key(output.build_id, job.target, job.attempt),
                      manifest.model_dump_json(indent=2).encode(), "application/json")
    return manifest


def _store_log(storage: ObjectStore, job: JobMessage, joblog: JobLog) -> None:
    key = keys.log_key(job.build_id, job.target, job.attempt)
    try:
        storage.put_bytes(key, ("\n".join(joblog.lines) + "\n").encode(), "text/plain")
    except StorageError:
        log.warning("could not store the log of %s at %s", job.job_id, key)
