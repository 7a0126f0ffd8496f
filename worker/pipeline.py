"""One job, as a readable list of steps:

    report start → fetch source → [make a Cargo.lock: network on, no crate config]
    → registry crates into the verified deps volume (the worker's own downloads)
    → [restore the project's compile cache from the store, see worker/compile_cache.py]
    → cargo build (network off; in the project's warm target dir if this worker keeps
      one and no other build holds it, see worker/warm.py) → copy artifacts out
    → [store the compile cache the build left, checked, if it changed]
    → upload artifacts (those whose bytes the tenant already stores are named, not sent)
    → write manifest last → store the log → report the outcome
    → [note the artifacts uploaded, for the tenant's later builds]

No code of the crate runs while a network is reachable: the only networked step
resolves a lock file with none of the crate's configuration, and dependencies are
fetched by the worker (worker/deps.py), not by cargo.

Expected failures (cargo errors, timeouts, cancels, storage) become the job's
outcome; they are data, not crashes.
"""

from __future__ import annotations

import io
import logging
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from crossfarm.shared import keys
from crossfarm.shared.arch import Arch, BuildMode, target_arch
from crossfarm.shared.errors import (
    BuildCancelled,
    BuildError,
    BuildStalled,
    BuildTimeout,
    Conflict,
    LeaseLost,
    LimitExceeded,
    StorageError,
)
from crossfarm.shared.ids import SourceDigest
from crossfarm.shared.states import BuildState
from crossfarm.shared.storage import ObjectStore
from crossfarm.shared.tree import TreeLimits, project_of
from crossfarm.shared.wire import (
    CargoReuse,
    Command,
    EndState,
    JobFinished,
    JobMessage,
    JobStarted,
    Manifest,
    SourceTree,
    TestCounts,
)
from crossfarm.worker import cargo, compile_cache, deps, image_volumes, warm
from crossfarm.worker.artifacts import (
    ArtifactCollector,
    JobOutput,
    Wanted,
    build_manifest,
    held_lookup,
    own_key,
    profile_dir,
    remember_held,
    wants_timings,
)
from crossfarm.worker.compile_cache import JobCache
from crossfarm.worker.container import (
    ContainerRunner,
    LineSink,
    Step,
    StepContainer,
    StepResult,
    StopCheck,
    joined_tars,
)
from crossfarm.worker.deps import CrateSource, DependencyCache
from crossfarm.worker.disk import DiskSpec
from crossfarm.worker.images import BUILD_UID, builder_image, job_mode, served_queues
from crossfarm.worker.joblog import JobLog
from crossfarm.worker.lease import Lease
from crossfarm.worker.libtest import TestTally
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
from crossfarm.worker.toolchains import Toolchains
from crossfarm.worker.warm import Loan

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
    #: None: every job is built with settings.builder_image, unprobed (unit tests)
    toolchains: Toolchains | None = None


class Ending(Protocol):
    """Makes the outcome report of the attempt being run (it holds the attempt's lease)."""

    def __call__(self, state: EndState, exit_code: int | None = None,
                 reason: str | None = None, manifest: Manifest | None = None,
                 reuse: CargoReuse | None = None) -> JobFinished: ...


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
    mode: BuildMode = BuildMode.NATIVE
    #: what `rustc -vV` printed in the image (None: not probed)
    rustc: str | None = None

    @property
    def test(self) -> bool:
        return self.job.cargo.command is Command.TEST

    @property
    def runs_tests(self) -> bool:
        """A test job whose tests run here: not --no-run, and not cross-compiled (this
        worker's CPU cannot run them)."""
        return self.test and not self.job.cargo.no_run and self.mode is not BuildMode.CROSS
    #: what the build step found done, once cargo ran (for the outcome report)
    reuse: list[CargoReuse] = field(default_factory=list)

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
    # sent to this worker's own queue (affinity), it is a job of the queue beside it
    consumed_from = keys.shared_queue(consumed_from)
    served = served_queues(tools.host, settings.cross_arches, settings.emulate_arches)
    image, rustc = settings.builder_image, None
    try:
        mode = job_mode(job.target, consumed_from, served)
        image, rustc = _image_for(tools, job, mode)
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
              manifest: Manifest | None = None, reuse: CargoReuse | None = None
              ) -> JobFinished:
        return JobFinished(attempt=job.attempt, worker=settings.worker_name, lease=lease,
                           state=state, exit_code=exit_code, reason=reason, manifest=manifest,
                           reuse=reuse)
    joblog = JobLog(tools.reporter, job.build_id, job.target, list(job.env.values()),
                    settings.log_max_bytes)
    joblog(f"crossfarm: {job.target} on {tools.settings.worker_name} "
           f"({tools.host.value}, {mode.value}), attempt {job.attempt}")
    if rustc is not None and not refusal:
        joblog(f"crossfarm: toolchain {job.cargo.toolchain or 'default'}: {image}, "
               f"{rustc.splitlines()[0]}")
    try:
        outcome = (ended(state=BuildState.FAILED, reason=refusal)
                   if refusal else _build(tools, job, (image, mode, rustc), joblog, ended))
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
    if outcome.state is BuildState.SUCCEEDED:
        _remember_held(tools.storage, job, outcome.manifest)
    return outcome.state


def _image_for(tools: Toolbox, job: JobMessage, mode: BuildMode) -> tuple[str, str | None]:
    """The builder image of a job and what its rustc says (None: not probed). An emulated
    build runs the image of the target's architecture; any other the toolchain's."""
    settings = tools.settings
    if mode is BuildMode.EMULATED:
        return builder_image(mode, target_arch(job.target), settings.builder_image,
                             settings.emulation_images), None
    if tools.toolchains is None:
        return settings.builder_image, None
    offer = tools.toolchains.for_job(job.cargo.toolchain)
    if job.target not in offer.targets:
        raise BuildError(f"toolchain {offer.name} ({offer.image}) has no standard library "
                         f"for {job.target}; it has: {', '.join(offer.targets)}")
    return offer.image, offer.rustc


def _queue_mode(queue: str) -> BuildMode:
    """The mode a queue stands for, to report with a refusal; native if it is not ours."""
    try:
        return keys.QueueKey.parse(queue).mode
    except ValueError:
        return BuildMode.NATIVE


def _build(tools: Toolbox, job: JobMessage, how: tuple[str, BuildMode, str | None],
           joblog: JobLog, ended: Ending) -> JobFinished:
    """Build and publish; `how` is the image, the mode and the image's `rustc -vV`;
    `ended` makes the outcome to report (it holds the lease)."""
    image, mode, rustc = how
    run = JobRun(tools, job, image, joblog, deadline=time.monotonic() + job.timeout_s,
                 stop=_stop_check(tools, job), mode=mode, rustc=rustc)

    def with_reuse(state: EndState, exit_code: int | None = None, reason: str | None = None,
                   manifest: Manifest | None = None) -> JobFinished:
        return ended(state=state, exit_code=exit_code, reason=reason, manifest=manifest,
                     reuse=run.reuse[-1] if run.reuse else None)

    try:
        manifest = _compile_and_publish(run)
    except TestsFailed as exc:
        # the counts travel in the report's manifest (no artifacts, and none stored)
        return with_reuse(state=BuildState.FAILED, exit_code=exc.exit_code, reason=exc.message,
                          manifest=exc.manifest)
    except BuildCancelled as exc:
        return with_reuse(state=BuildState.CANCELLED, reason=exc.message)
    except BuildTimeout:
        return with_reuse(state=BuildState.FAILED,
                          reason=f"timeout: the build ran past {job.timeout_s} s and was "
                                 "killed")
    except BuildStalled as exc:
        return with_reuse(state=BuildState.FAILED, reason=_stalled_reason(exc, mode))
    except BuildError as exc:
        return with_reuse(state=BuildState.FAILED, exit_code=exc.exit_code, reason=exc.message)
    except LeaseLost:
        raise  # not an outcome: the job belongs to another attempt now
    except StorageError as exc:
        advice = ("retryable: resubmit once the object store is back" if exc.retryable
                  else "the stored source is damaged; an operator should check the object "
                       "store")
        return with_reuse(state=BuildState.FAILED, reason=f"storage: {exc.message}; {advice}")
    except Exception as exc:  # a bug or an engine failure must still end the job as data
        log.exception("job %s failed on this worker", job.job_id)
        return with_reuse(state=BuildState.FAILED,
                          reason=f"worker error: {type(exc).__name__}: {exc}")
    return with_reuse(state=BuildState.SUCCEEDED, exit_code=0, manifest=manifest)


def _stalled_reason(exc: BuildStalled, mode: BuildMode) -> str:
    """A stalled job's reason: what the watchdog saw, the likely cause and what to do."""
    if mode is BuildMode.EMULATED:
        cause = ("a known qemu-user hang under emulation (a deadlock after a fork); "
                 "submit it again")
    else:
        cause = ("something in it waits for what never comes (a build script or test that "
                 "sleeps or blocks); fix that, or ask the operator to raise the worker's "
                 "CROSSFARM_STALL_S")
    return f"stalled: {exc.message}, and was stopped: {cause}"


def _compile_and_publish(run: JobRun) -> Manifest:
    tools, job, settings = run.tools, run.job, run.settings
    settings.scratch_dir.mkdir(parents=True, exist_ok=True)
    if run.test and not run.runs_tests:
        run.log("crossfarm: tests built, not run: " + (
            "--no-run" if job.cargo.no_run else
            f"cross-compiled on this {tools.host.value} worker, whose CPU cannot run "
            f"{job.target} code (--placement emulate-ok runs them under emulation)"))
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
            _fetch_blobs(run, retry, source, tree, limits)
        with _warm_dir(run, tree) as loan:
            tar = _source_tar(run, tree, _mtimes(run, loan, tree))
            lock = _lock_file(run, tree)
            with tar:
                with run.log.timed("dependencies"):
                    vendored = _dependencies(run, tree, lock, Path(scratch))
                with (vendored, tools.docker.volume(run.volume, run.labels, _disk(run)),
                      _compile_cache(run, tree, image_id, Path(scratch)) as cache):
                    files, tally = _compile(run, lock is not None, [tar, vendored],
                                            Path(scratch), loan, cache)
        _evict_warm(run)
        output = JobOutput(build_id=job.build_id, job_id=job.job_id, target=job.target,
                           attempt=job.attempt, profile=job.cargo.profile, image_id=image_id,
                           rustc=run.rustc,
                           tests=tally.counts(ran=run.runs_tests) if run.test else None)
        with run.log.timed("artifact upload"):
            manifest = retry.run("artifact upload", lambda: _publish(
                tools.storage, output, files, run.stop, job.tenant))
            run.log(_said_upload(manifest))
        return manifest


def _fetch_blobs(run: JobRun, retry: Retry, source: SourceDigest, tree: SourceTree,
                 limits: TreeLimits) -> None:
    """Every blob of the tree in this worker's cache (fetched if missing)."""
    cache = run.settings.scratch_dir / "blobs"
    with cache_lock(cache):
        fetched = retry.run("source download", lambda: fetch_blobs(
            run.tools.storage, source, tree, cache, limits))
    run.log(f"crossfarm: {len(tree.entries)} files, {fetched} blob(s) not cached here")


def _source_tar(run: JobRun, tree: SourceTree, mtimes: dict[str, float] | None
                ) -> IO[bytes]:
    """The tree as the container's tar, its blobs from this worker's cache; then the
    cache is trimmed to its budget, unless another build reads it. (Blobs this build
    fetched or used are younger than _BLOB_IN_USE_S: no trim takes them before the tar
    is made.)"""
    cache = run.settings.scratch_dir / "blobs"
    with cache_lock(cache):
        tar = container_tar(tree, cache, "src", BUILD_UID, mtimes=mtimes)
    with cache_lock(cache, exclusive=True) as alone:
        removed, freed = (trim_cache(cache, run.settings.blob_cache_bytes, _BLOB_IN_USE_S)
                          if alone else (0, 0))
    if removed:
        run.log(f"crossfarm: blob cache trimmed to its budget: {removed} file(s), "
                f"{freed} bytes freed")
    return tar


@contextmanager
def _warm_dir(run: JobRun, tree: SourceTree) -> Iterator[Loan | None]:
    """This project's warm target dir, alone, for the block; None (a cold build in the
    job volume) when warm dirs are off, or another build of the project holds it."""
    settings, job = run.settings, run.job
    why = None
    if not settings.warm_bytes:
        why = "warm target dirs are off on this worker (CROSSFARM_WARM_BYTES=0)"
    elif settings.job_disk_bytes:
        why = ("warm target dirs need CROSSFARM_JOB_DISK_BYTES=0 on this worker: a warm "
               "dir would sit outside the job's hard disk budget")
    elif job.tenant is None:
        why = "the controller named no tenant for this job"
    if why is not None:
        run.log(f"crossfarm: cold target dir: {why}")
        yield None
        return
    assert job.tenant is not None
    project = _project(run, tree)
    key = warm.WarmKey(job.tenant, project, job.target, job.cargo.profile)
    with _shelf(run).borrow(key.name(settings.worker_name), key.affinity()) as loan:
        if loan is None:
            run.log(f"crossfarm: cold target dir: another build of {project} holds its warm "
                    "dir on this worker")
        yield loan


def _project(run: JobRun, tree: SourceTree) -> str:
    """The job's project: the one its request named, else the one its tree tells."""
    if run.job.project is not None:
        return run.job.project
    cache = run.settings.scratch_dir / "blobs"
    with cache_lock(cache):
        return project_of(tree, lambda sha: (cache / sha).read_bytes())


@contextmanager
def _compile_cache(run: JobRun, tree: SourceTree, image_id: str | None, scratch: Path
                   ) -> Iterator[JobCache | None]:
    """The project's compile cache, restored from the store for the block; None when it
    is off for this build (the worker's setting, or the reason the log gives)."""
    settings, job = run.settings, run.job
    if not settings.compile_cache_bytes:
        yield None
        return
    why = ("the controller named no tenant for this job" if job.tenant is None else
           "the build sets its own RUSTC_WRAPPER" if "RUSTC_WRAPPER" in job.env else
           "the builder image has no id" if image_id is None else None)
    if why is not None or job.tenant is None or image_id is None:
        run.log(f"crossfarm: compile cache: off: {why}")
        yield None
        return
    key = keys.CompileCacheKey(job.tenant, _project(run, tree), job.target,
                               job.cargo.profile, image_id)
    limits = compile_cache.Limits(settings.compile_cache_bytes)
    with run.log.timed("compile cache restore"):
        cache = compile_cache.open_cache(run.tools.storage, key, limits, scratch)
    run.log(f"crossfarm: compile cache: {cache.restored.said}")
    with cache.restored.tar:
        yield cache


def _shelf(run: JobRun) -> warm.WarmShelf:
    return warm.WarmShelf(run.settings.scratch_dir / "warm")


def _mtimes(run: JobRun, loan: Loan | None, tree: SourceTree) -> dict[str, float] | None:
    """A warm build's source mtimes (see worker/warm.py), recorded before cargo sees
    them; None for a cold build (every file at 0, as always)."""
    if loan is None:
        return None
    now = time.time()
    mtimes = warm.source_mtimes(loan.previous, tree, now)
    _shelf(run).record(loan, tree, mtimes, used_at=now)
    return mtimes


def _evict_warm(run: JobRun) -> None:
    """Warm dirs past the worker's budget go, least recently used first."""
    if not run.settings.warm_bytes:
        return
    dropped = warm.evict(_shelf(run), run.settings.warm_bytes, run.tools.docker.remove_volume)
    if dropped:
        run.log(f"crossfarm: {len(dropped)} warm target dir(s) dropped to keep this worker "
                f"under CROSSFARM_WARM_BYTES={run.settings.warm_bytes}")


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
        result = container.run(lambda _s, line: run.log(line), run.deadline, run.stop,
                               stall_s=run.settings.stall_s)
        if result.exit_code != 0:
            raise BuildError("making a Cargo.lock failed (see the log above); commit one "
                             "to build exactly what you tested", exit_code=result.exit_code)
        made = container.copy_out(f"{cargo.SRC}/Cargo.lock", scratch)
    run.log("crossfarm: no Cargo.lock in the source: made one with the newest compatible "
            "versions")
    return made.read_bytes()


def _compile(run: JobRun, locked: bool, inputs: list[IO[bytes]], tmp: Path,
             loan: Loan | None = None, cache: JobCache | None = None
             ) -> tuple[list[Path], TestTally]:
    """The build step, network off: `inputs` (tars) go into the job volume first; with
    a `loan`, cargo's target dir is the warm one; with a `cache`, sccache is cargo's
    RUSTC_WRAPPER over the project's compile cache, stored again once the build
    succeeded. A test job's tests run in it too, and the tally counts their results."""
    settings = run.settings
    target_dir = cargo.WARM_TARGET if loan is not None else cargo.TARGET_DIR
    wanted: Wanted = ("shipped" if not run.test else
                      "tests" if run.job.cargo.no_run else "none")
    collector = ArtifactCollector(target_dir, settings.artifact_max_count, wanted)
    tally = TestTally()
    sink = _sink(run, collector, tally, cache)

    def stop() -> str | None:
        run.log.check()  # output past the log budget stops the build (LimitExceeded)
        return run.stop()

    jobs = max(1, int(settings.build_cpus))
    step = _step(run, cargo.build_command(run.job, locked, jobs, run_tests=run.runs_tests),
                 network=False, loan=loan, cache=cache)
    if loan is not None:
        run.tools.docker.keep_volume(loan.name, keys.warm_labels(settings.worker_name))
    if set(image_volumes.PATHS) <= set(step.readonly_volumes.values()):
        run.log(f"crossfarm: {run.image}'s {' and '.join(image_volumes.PATHS)} read from "
                "volumes copied from it (CROSSFARM_IMAGE_VOLUMES)")
    try:
        with run.log.timed("build step"), run.tools.docker.container(step) as container:
            # one copy into the container, not one per tar (each is an engine round trip):
            # the source and vendor links, the compile cache's restored dir, and the warm
            # volume's target folder (a member under WORK the engine follows into it)
            container.put(cargo.WORK, joined_tars(
                [*inputs, *([cache.restored.tar] if cache else []),
                 *([_target_dir_tar()] if loan is not None else [])]))
            result = container.run(sink, run.deadline, stop,
                                   max_line=settings.log_line_max_bytes,
                                   stall_s=settings.stall_s)
            run.log.check()
            run.reuse.append(_reuse(loan, collector.units, cache))
            _say_warm(run, loan, collector.units)
            _say_compile_cache(run, cache)
            if run.runs_tests:
                run.log(f"crossfarm: tests: {tally.summary()}")
            files = _after_build(run, container, result, collector, tmp, tally, loan)
            _store_compile_cache(run, container, cache, tmp)
            return files, tally
    finally:
        if loan is not None:
            _shelf(run).size(loan, run.tools.docker.volume_bytes(loan.name))


def _sink(run: JobRun, collector: ArtifactCollector, tally: TestTally,
          cache: JobCache | None) -> LineSink:
    """Where the build step's lines go: the compile cache's marker lines to its reader,
    cargo's JSON messages to the collector, libtest's lines to the tally, and all but
    the first two to the log."""
    def sink(stream: str, line: str) -> None:
        if stream == "stdout" and cache is not None and cache.stats.feed(line):
            return
        if stream == "stdout" and collector.feed(line):
            return
        if stream == "stdout":
            tally.feed(line)
        run.log.output(line)

    return sink


def _after_build(run: JobRun, container: StepContainer, result: StepResult,
                 collector: ArtifactCollector, tmp: Path, tally: TestTally,
                 loan: Loan | None = None) -> list[Path]:
    settings = run.settings
    if result.oom_killed:
        raise BuildError("out-of-memory: the build container hit its memory limit of "
                         f"{settings.build_memory_bytes} bytes", exit_code=result.exit_code)
    if result.exit_code != 0 and run.tools.docker.volume_full(run.volume):
        raise LimitExceeded("disk", "the job's writable space of "
                            f"{settings.job_disk_bytes} bytes is full", settings.job_disk_bytes,
                            "CROSSFARM_JOB_DISK_BYTES")
    if result.exit_code == 0 and wants_timings(run.job.cargo.cargo_args):
        collector.add_timings()
    collector.check()
    if result.exit_code != 0 and run.runs_tests and tally.counts().failed:
        counts = tally.counts()
        raise TestsFailed(
            f"tests failed: {counts.failed} of {counts.passed + counts.failed} "
            "(see the log above)", exit_code=result.exit_code, manifest=_test_report(run, counts))
    if result.exit_code != 0:
        raise BuildError(f"cargo {run.job.cargo.command.value} failed with exit code "
                         f"{result.exit_code}", exit_code=result.exit_code)
    out = tmp / "artifacts"
    out.mkdir()
    warm_volume = (loan.name, cargo.WARM) if loan is not None else None
    return _copy_artifacts(container, collector.paths, out, settings.artifact_max_bytes,
                           run.tools.docker, warm_volume)


def _reuse(loan: Loan | None, units: list[tuple[str, bool]], cache: JobCache | None = None
           ) -> CargoReuse:
    """What the build found done, for the summary's CACHE column."""
    return CargoReuse(target_dir="cold" if loan is None else "warm", units=len(units),
                      fresh=sum(1 for _, was_fresh in units if was_fresh),
                      compile_cache=cache.stats.use if cache is not None else None)


def _say_compile_cache(run: JobRun, cache: JobCache | None) -> None:
    """The log line of the compile cache's hits, or why sccache did not run."""
    if cache is None:
        return
    stats = cache.stats
    if stats.use is not None:
        run.log(f"crossfarm: compile cache: {compile_cache.summary(stats.use)}")
    elif stats.off == "missing":
        run.log(f"crossfarm: compile cache: off: the builder image {run.image} has no "
                "sccache; built without it")
    elif stats.off == "no-server":
        run.log("crossfarm: compile cache: off: sccache's server did not start (see "
                "above); built without it")
    else:
        run.log("crossfarm: compile cache: sccache reported no stats")


def _store_compile_cache(run: JobRun, container: StepContainer, cache: JobCache | None,
                         tmp: Path) -> None:
    """After a successful build: the cache dir it left, checked, goes to the store if its
    files changed. A refused dir or a failing store is said in the log; the build stands."""
    if cache is None or cache.stats.use is None or not cache.store:
        return
    try:
        with run.log.timed("compile cache upload"):
            said = compile_cache.save(lambda: container.archive(compile_cache.CACHE_DIR),
                                      run.tools.storage, cache.key, cache.limits, tmp,
                                      cache.restored)
    except (compile_cache.Refused, tarfile.TarError) as exc:
        said = f"not stored: {compile_cache.why_refused(exc)}"
    except (StorageError, BuildError) as exc:
        said = f"not stored: {exc.message}"
    except Exception as exc:  # the engine failing mid-stream: a cache never fails a build
        log.exception("job %s: the compile cache was not stored", run.job.job_id)
        said = f"not stored: {type(exc).__name__}: {exc}"
    run.log(f"crossfarm: compile cache: {said}")


def _say_warm(run: JobRun, loan: Loan | None, units: list[tuple[str, bool]]) -> None:
    """The log line a warm build ends with: how many of cargo's units were fresh, and
    which were rebuilt (from cargo's own compiler-artifact messages)."""
    if loan is None:
        return
    fresh = sum(1 for _, was_fresh in units if was_fresh)
    rebuilt = [name for name, was_fresh in units if not was_fresh]
    first = " (its first build here)" if loan.new else ""
    run.log(f"crossfarm: warm target dir{first}: {fresh} unit(s) fresh, {len(rebuilt)} "
            f"rebuilt: {', '.join(rebuilt) or 'none'}")


def _target_dir_tar() -> IO[bytes]:
    """The warm volume's target folder, owned by the build user (the volume's root is
    root's, and an engine copy never changes the owner of the folder it copies into), as
    a member of a tar copied into cargo.WORK: the engine follows the path into the warm
    volume mounted below it."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(cargo.WARM_TARGET.removeprefix(cargo.WORK + "/"))
        info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, BUILD_UID, BUILD_UID
        tar.addfile(info)
    out.seek(0)
    return out


def _disk(run: JobRun) -> DiskSpec | None:
    """The job volume's hard size (CROSSFARM_JOB_DISK_BYTES; 0: a plain volume)."""
    size = run.settings.job_disk_bytes
    return DiskSpec(size, run.settings.scratch_dir / "disks", BUILD_UID) if size else None


def _copy_artifacts(container: StepContainer, paths: list[str], out: Path, budget: int,
                    runner: ContainerRunner | None = None,
                    warm_volume: tuple[str, str] | None = None) -> list[Path]:
    """Each artifact streamed to `out`, refused (LimitExceeded) before its bytes are
    read if it is bigger than what is left of the job's artifact budget. One in the
    warm volume (`warm_volume`: its name and mount point) is read from the volume's
    directory where this worker can (see Docker.copy_from_volume), else copied out of
    the container through the engine."""
    files = []
    for path in paths:
        local = None
        if runner is not None and warm_volume is not None:
            name, mount = warm_volume
            if path.startswith(mount + "/"):
                local = runner.copy_from_volume(name, path.removeprefix(mount + "/"), out,
                                                max_bytes=budget)
        if local is None:
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


def _step(run: JobRun, command: list[str], network: bool, loan: Loan | None = None,
          cache: JobCache | None = None) -> Step:
    """The build step (network off: the job volume, the deps volume read-only, the
    request's variables, the warm target dir if lent, sccache around cargo with a
    compile cache) or the lock step (network on: none of those)."""
    settings = run.settings
    binds, volumes, readonly = {}, {}, {}
    if network:
        env = {"CARGO_HOME": "/tmp/cargo-home"}
        if settings.ca_bundle is not None:
            binds[settings.ca_bundle] = _CA_IN_CONTAINER
            env["CARGO_HTTP_CAINFO"] = _CA_IN_CONTAINER
    else:
        target_dir = cargo.TARGET_DIR if loan is None else cargo.WARM_TARGET
        env = {**run.job.env, "CARGO_TARGET_DIR": target_dir,
               "CARGO_HOME": f"{cargo.WORK}/{deps.CARGO_HOME}"}
        volumes, readonly = {run.volume: cargo.WORK}, {settings.deps_volume: deps.DEPS}
        readonly.update(image_volumes.mounts(run.tools.docker, settings.image_volumes,
                                             run.image))
        if loan is not None:
            volumes[loan.name] = cargo.WARM
        if cache is not None:  # after the request's variables: the farm's own win
            env.update(compile_cache.build_env(cache.limits))
            command = compile_cache.build_command(command)
    return Step(
        image=run.image, command=command, workdir=cargo.SRC,
        user=f"{BUILD_UID}:{BUILD_UID}", env=env, network=network,
        volumes=volumes, readonly_volumes=readonly, binds=binds,
        cpus=settings.build_cpus, memory_bytes=settings.build_memory_bytes,
        pids=settings.build_pids, labels=run.labels, tmpfs_bytes=settings.build_tmpfs_bytes,
        # the lock step runs no crate code, and its source goes into the image's /work
        writable_root=network,
        # The builder image names a linker for each target in the environment, which
        # cargo puts above every config file: needed for its cross toolchain, but for a
        # target of the image's own architecture it would override the linker the
        # crate's .cargo/config.toml chooses. Cargo's default (cc) links natively.
        unset_env=() if run.mode is BuildMode.CROSS else (cargo.linker_variable(run.job.target),),
    )


class TestsFailed(BuildError):
    """Some of a test job's tests failed: the job fails, and its report carries the
    counts in a manifest with no artifacts (which is never stored as published)."""

    __test__ = False  # not a pytest class

    def __init__(self, message: str, exit_code: int | None, manifest: Manifest) -> None:
        super().__init__(message, exit_code=exit_code)
        self.manifest = manifest


def _test_report(run: JobRun, counts: TestCounts) -> Manifest:
    job = run.job
    return Manifest(build_id=job.build_id, job_id=job.job_id, target=job.target,
                    attempt=job.attempt, profile_dir=profile_dir(job.cargo.profile),
                    artifacts=[], rustc=run.rustc, tests=counts)


def _publish(storage: ObjectStore, output: JobOutput, files: list[Path],
             stop: StopCheck, tenant: str | None = None) -> Manifest:
    """Upload every artifact under this attempt's prefix, then the manifest, last: the
    manifest is what publishes. A file whose bytes the tenant already stores is not
    uploaded: the manifest names that object (worker/artifacts.py). A job cancelled or
    superseded while its artifacts were uploading (`stop` says so) writes none. An
    earlier try's unfinished multipart uploads (the store went away mid-upload, so they
    could not be aborted then) are aborted first."""
    for pending in storage.pending_uploads(keys.job_prefix(output.build_id, output.target,
                                                          output.attempt)):
        storage.abort_upload(pending)
    held = held_lookup(storage, tenant) if tenant is not None else None
    manifest = build_manifest(output, files, held)
    by_name = {path.name: path for path in files}
    for entry in manifest.artifacts:
        if own_key(manifest, entry):
            storage.put_file(entry.key, by_name[entry.name], entry.sha256)
    if reason := stop():
        raise BuildCancelled(reason)
    storage.put_bytes(keys.manifest_key(output.build_id, output.target, output.attempt),
                      manifest.model_dump_json(indent=2).encode(), "application/json")
    return manifest


def _said_upload(manifest: Manifest) -> str:
    """The log line of what the artifact upload sent and what it found already stored."""
    sent = [entry for entry in manifest.artifacts if own_key(manifest, entry)]
    kept = [entry for entry in manifest.artifacts if not own_key(manifest, entry)]
    said = (f"crossfarm: artifacts: {len(sent)} uploaded "
            f"({sum(entry.size for entry in sent)} bytes)")
    if kept:
        said += (f", {len(kept)} already stored for this tenant, not sent again "
                 f"({sum(entry.size for entry in kept)} bytes): "
                 f"{', '.join(entry.name for entry in kept)}")
    return said


def _remember_held(storage: ObjectStore, job: JobMessage, manifest: Manifest | None) -> None:
    """Once the controller took a job's success: its uploads are noted for the tenant's
    later builds. A failing store costs only that saving, never the build."""
    if job.tenant is None or manifest is None:
        return
    try:
        remember_held(storage, job.tenant, manifest)
    except StorageError as exc:
        log.warning("job %s: its artifacts were not noted for later builds: %s",
                    job.job_id, exc.message)


def _store_log(storage: ObjectStore, job: JobMessage, joblog: JobLog) -> None:
    key = keys.log_key(job.build_id, job.target, job.attempt)
    try:
        storage.put_bytes(key, ("\n".join(joblog.lines) + "\n").encode(), "text/plain")
    except StorageError:
        log.warning("could not store the log of %s at %s", job.job_id, key)
