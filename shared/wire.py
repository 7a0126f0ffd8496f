"""Wire models: every document that crosses a process boundary.

Strict on purpose: unknown fields are rejected and instances are frozen, so a
typo in a request is an error, not a silently ignored option.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from crossfarm.shared.arch import Arch, BuildMode, Placement
from crossfarm.shared.ids import BuildId, JobId, SourceDigest
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.states import BuildState

Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
#: a source tree, named by its digest (see tree_digest)
SourceRef = Annotated[SourceDigest, Field(pattern=r"^[0-9a-f]{64}$")]
ProfileName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
FeatureName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+/-]{0,127}$")]
TargetName = Annotated[str, Field(min_length=1, max_length=100)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
EnvValue = Annotated[str, Field(max_length=32_768)]
#: the secret a worker is given when it starts an attempt; each field holding one is kept
#: out of reprs, so a logged report or verdict never shows it
LeaseSecret = Annotated[str, Field(min_length=1, max_length=100)]

#: Unicode categories no file name the farm writes may hold: controls (C0, DEL, C1),
#: format characters (bidi overrides, zero-width), surrogates, line and paragraph separators.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def plain_file_name(name: str) -> str:
    """`name` if it is one plain file name a client may write inside its directory: not
    empty, `.` or `..`, no separator, no control or bidi character, at most 255 bytes.
    ValueError (naming what is wrong, not echoing the name) otherwise."""
    if name in ("", ".", ".."):
        raise ValueError("a file name may not be empty, '.' or '..'")
    if "/" in name or "\\" in name:
        raise ValueError("a file name may not hold a path separator")
    if any(unicodedata.category(char) in _UNPRINTABLE for char in name):
        raise ValueError("a file name may not hold control, format or bidi characters")
    if len(name.encode()) > 255:
        raise ValueError("a file name is at most 255 bytes")
    return name


#: a name a client writes as one file inside a directory of its own (artifacts)
FileName = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(plain_file_name)]


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Command(StrEnum):
    """Which cargo command a build runs on each target."""

    #: `cargo build`: the artifacts are the crate's binaries and shipped libraries
    BUILD = "build"
    #: `cargo test`: runs the tests where the target's code can run, reports their counts
    TEST = "test"


#: A toolchain as a crate or the CLI names it (`rust-toolchain.toml`'s channel, `+1.63`):
#: a version ("1.63", "1.63.0") or an operator's name for one ("stable"). Never a path.
ToolchainName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


#: What a crate may ask for that means "the farm's default toolchain": Debian's toolchains
#: have no channels, so `stable` is whichever release a worker builds with by default.
DEFAULT_CHANNELS = frozenset({"stable"})


def toolchain_answers(requested: str, name: str, release: str) -> bool:
    """Whether an announced toolchain (`name`, its rustc `release`) is what `requested`
    names: the name itself, its release ("1.63.0"), or a prefix of it ("1.63")."""
    return requested in (name, release) or release.startswith(requested + ".")


class CargoSpec(Wire):
    """How cargo builds every target of a build: the one home of the build's cargo
    options, carried unchanged from the CLI through the request, the record and the
    job message to the worker's command line. A new option is a field here, its
    flags in `flags()`, a CLI flag and a line in the cargo-argument allow-list.
    Being here, each option is also part of the result cache's key."""

    #: the cargo command; a test job reports its test counts in its manifest
    command: Command = Command.BUILD
    #: `cargo test --no-run`: build the test binaries and return them as artifacts
    no_run: bool = False
    #: which of the farm's toolchains builds it (the controller resolves what the crate
    #: or the CLI asked for to a name the workers announce); None: the workers' default
    toolchain: ToolchainName | None = None
    profile: ProfileName = "dev"
    features: Annotated[list[FeatureName], Field(max_length=256)] = []
    all_features: bool = False
    no_default_features: bool = False
    #: extra arguments, checked against the controller's allow-list (cargo_args.py)
    cargo_args: Annotated[list[Annotated[str, Field(max_length=256)]], Field(max_length=64)] = []

    def flags(self) -> list[str]:
        """The `cargo build` arguments these options stand for, after the profile."""
        flags = ["--features", ",".join(self.features)] if self.features else []
        if self.all_features:
            flags.append("--all-features")
        if self.no_default_features:
            flags.append("--no-default-features")
        return flags + list(self.cargo_args)

    @model_validator(mode="after")
    def _no_run_is_for_tests(self) -> CargoSpec:
        if self.no_run and self.command is not Command.TEST:
            raise ValueError("no_run applies to command 'test' only (cargo test --no-run)")
        return self


class TestCounts(Wire):
    """How a test run went, summed over libtest's `test result:` lines (one per test
    binary, doc tests included). The lines come from the crate's own output, so a test
    could forge them: they describe the run to its owner, never decide for the farm."""

    __test__ = False  # a wire model, not a pytest class

    passed: Annotated[int, Field(ge=0)] = 0
    failed: Annotated[int, Field(ge=0)] = 0
    ignored: Annotated[int, Field(ge=0)] = 0
    #: benchmarks libtest counted and did not run
    measured: Annotated[int, Field(ge=0)] = 0
    filtered_out: Annotated[int, Field(ge=0)] = 0
    #: test binaries that reported a result
    suites: Annotated[int, Field(ge=0)] = 0
    #: False when the tests were built and not run (--no-run, or a cross toolchain whose
    #: binaries this worker cannot run); the counts are then all 0
    ran: bool = True


class BuildRequest(Wire):
    """What a user asks the farm to build. The timeout and the variables are not part
    of the cargo spec: the farm resolves the timeout and each job gets its own target's
    variables, while views only ever name them."""

    source: SourceRef
    targets: Annotated[list[TargetName], Field(min_length=1, max_length=16)]
    cargo: CargoSpec = CargoSpec()
    timeout_s: Annotated[int, Field(ge=10, le=24 * 3600)] | None = None
    #: variables set in the build container (Cross.toml passthrough); values are redacted
    #: from logs and never returned by the API
    env: Annotated[dict[EnvName, EnvValue], Field(max_length=64)] = {}
    target_env: Annotated[dict[TargetName, dict[EnvName, EnvValue]], Field(max_length=16)] = {}
    submitter: Annotated[str, Field(max_length=200)] | None = None
    #: which build modes are acceptable; the farm's default when unset
    placement: Placement | None = None
    #: fail a job that no worker has started after this long (default: wait for ever)
    wait_limit_s: Annotated[int, Field(ge=1, le=7 * 24 * 3600)] | None = None
    #: serve a target from the result cache when an earlier successful build of this
    #: tenant had the same inputs and builder image; False builds it anyway
    cache: bool = True
    #: which project this is (the CLI sends its workspace's package names): builds of one
    #: project of one tenant share a worker's warm target dir; unset: the worker tells
    #: from the tree, and the placer sends the build to no worker in particular
    project: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class CompileCacheUse(Wire):
    """What sccache, the compile cache (CROSSFARM_COMPILE_CACHE_BYTES), said of the compiler
    calls of a build it could cache: how many it served from the project's cache (hits)
    and how many it compiled and stored (misses). Printed inside the build's container,
    which build code can forge: it describes the job, it decides nothing."""

    hits: Annotated[int, Field(ge=0, le=10_000_000)]
    misses: Annotated[int, Field(ge=0, le=10_000_000)]

    @property
    def hit_rate(self) -> float | None:
        """The share of cacheable calls served from the cache; None when there were none."""
        calls = self.hits + self.misses
        return self.hits / calls if calls else None


class CargoReuse(Wire):
    """What a worker's build found already done: the target dir it built in, and how many
    of the units cargo reported were fresh (not rebuilt). The counts come from cargo's
    messages, which build code can forge: they describe the job, they decide nothing."""

    #: warm: the project's warm target dir on that worker; cold: an empty one
    target_dir: Literal["warm", "cold"]
    units: Annotated[int, Field(ge=0, le=1_000_000)]
    fresh: Annotated[int, Field(ge=0, le=1_000_000)]
    #: the compile cache's hits and misses; None: it was off for the build (the worker's
    #: setting, or a builder image without sccache: the job's log says which)
    compile_cache: CompileCacheUse | None = None

    @model_validator(mode="after")
    def _fresh_within_units(self) -> CargoReuse:
        if self.fresh > self.units:
            raise ValueError(f"fresh units ({self.fresh}) exceed the units ({self.units})")
        return self

    @property
    def hit_rate(self) -> float | None:
        """The share of units that were fresh; None when cargo reported none."""
        return self.fresh / self.units if self.units else None


class JobView(Wire):
    """One target of a build, as the API reports it."""

    job_id: JobId
    target: str
    arch: Arch
    queue: QueueKey
    state: BuildState
    attempt: int
    worker: str | None = None
    mode: BuildMode | None = None
    consumed_from: str | None = None
    placement: Placement = Placement.NATIVE
    #: why the job went to its queue ("cross: no arm64 worker online; …")
    placed: str | None = None
    #: while queued: what it waits for and its place in line
    waiting: str | None = None
    wait_limit_s: int | None = None
    queued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    #: served from the result cache: the earlier build whose artifacts it has (no worker
    #: ran it)
    cached_from: BuildId | None = None
    #: from its manifest: a test job's counts, and the `rustc -vV` of the image that ran it
    tests: TestCounts | None = None
    rustc: str | None = None
    #: built by a worker: in a warm or a cold target dir, and how much cargo found fresh
    reuse: CargoReuse | None = None


class BuildView(Wire):
    """A build and each of its jobs."""

    build_id: BuildId
    state: BuildState
    created_at: datetime
    source: SourceDigest
    cargo: CargoSpec
    env_names: list[str] = []
    submitter: str | None = None
    jobs: list[JobView]


class ArtifactEntry(Wire):
    """One file a build produced, as the manifest lists it."""

    name: FileName
    size: Annotated[int, Field(ge=0)]
    sha256: Digest
    key: Annotated[str, Field(min_length=1, max_length=1024)]
    executable: bool = False


class Manifest(Wire):
    """The list of one job's artifacts; written last, so its presence means complete."""

    build_id: BuildId
    job_id: JobId
    target: str
    attempt: int
    #: cargo's directory for the profile under target/<triple>/ ("debug", "release", …)
    profile_dir: FileName
    artifacts: Annotated[list[ArtifactEntry], Field(max_length=10_000)]
    #: the id of the builder image that made them: the result cache serves them only
    #: where a worker would build with that image again (None: an older worker's)
    image_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    #: what `rustc -vV` printed in that image (the exact compiler that made them)
    rustc: Annotated[str, Field(max_length=2000)] | None = None
    #: a test job's counts (None for a build)
    tests: TestCounts | None = None


class ArtifactView(Wire):
    """An artifact with a short-lived download URL."""

    target: str
    name: str
    size: int
    sha256: Digest
    url: str
    executable: bool = False
    path: str  # where cargo would put it: target/<triple>/<profile dir>/<name>


class Reply(Wire):
    """An answer the controller gives a worker (or the CLI: its health and targets).
    Unlike requests, a reply may carry fields this reader does not know yet (a newer
    controller): they are ignored, so upgrading the controller first never cuts its
    workers (or older CLIs) off."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class SourceLimits(Wire):
    """The farm's limits on one source tree (controller settings), which the CLI checks
    before it uploads and the worker checks again on what it downloads."""

    max_files: int = Field(ge=1)
    max_file_bytes: int = Field(ge=1)
    max_total_bytes: int = Field(ge=1)


class JobMessage(Reply):
    """The Celery payload of one job. Like a reply, it comes from the controller: fields
    a newer controller adds are ignored by older workers."""

    # It carries the build's variables: a validation error must not print their values.
    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    job_id: JobId
    build_id: BuildId
    target: str
    attempt: int
    source: SourceRef
    cargo: CargoSpec
    timeout_s: int
    env: dict[str, str] = {}
    #: the limits the controller checked the tree against (None: an older controller's)
    limits: SourceLimits | None = None
    #: the build's tenant: a worker keeps warm target dirs per tenant and project, and
    #: builds cold without it (an older controller's message)
    tenant: str | None = None
    #: the build's project (BuildRequest.project), if its request named one
    project: str | None = None


class JobStarted(Wire):
    """A worker's report that it starts a job."""

    attempt: int
    worker: str
    hostname: str
    mode: BuildMode
    consumed_from: str


#: the states a worker may report a job ended in
EndState = Literal[BuildState.SUCCEEDED, BuildState.FAILED, BuildState.CANCELLED]


class JobFinished(Wire):
    """A worker's report of a job's outcome; only the worker that started this attempt
    may send it."""

    attempt: int
    worker: Annotated[str, Field(min_length=1, max_length=200)]
    #: the secret its StartVerdict gave: the worker token and a name prove no more than
    #: being some worker
    lease: LeaseSecret = Field(repr=False)
    state: EndState
    exit_code: int | None = None
    reason: str | None = None
    manifest: Manifest | None = None
    #: set once cargo ran (whether or not the build succeeded)
    reuse: CargoReuse | None = None


class StartVerdict(Reply):
    """The controller's answer to JobStarted: go ahead, or drop the job."""

    proceed: bool
    reason: str | None = None
    #: with proceed: the attempt's lease secret, to send back with JobFinished (given once,
    #: stored by the controller only as its hash)
    lease: LeaseSecret | None = Field(default=None, repr=False)


class Event(Wire):
    """One entry of a build's event stream: a log line, a state change, or the end."""

    kind: Literal["log", "state", "end"]
    target: str | None = None
    line: str | None = None
    state: BuildState | None = None


def opening_events(build: BuildView) -> list[Event]:
    """What a build's event stream opens with, from its record alone: each job's first
    state (`queued`, where every job a worker runs starts, or `succeeded` for one served
    from the result cache), then which build a cached job's artifacts are from, then
    what a queued job waits for. The CLI shows the same for a build that was served
    whole from the cache, without opening the stream of a build already over."""
    events = [Event(kind="state", target=job.target,
                    state=BuildState.SUCCEEDED if job.cached_from else BuildState.QUEUED)
              for job in build.jobs]
    events += [Event(kind="log", target=job.target,
                     line=f"crossfarm: served from the result cache: the artifacts of build "
                          f"{job.cached_from}, made from the same inputs with the same "
                          "builder image")
               for job in build.jobs if job.cached_from]
    events += [Event(kind="log", target=job.target, line=f"crossfarm: {job.waiting}")
               for job in build.jobs if job.state is BuildState.QUEUED and job.waiting]
    return events


class TreeEntry(Wire):
    """One file or symlink of a source tree; a file's bytes are the blob named by sha256."""

    path: Annotated[str, Field(min_length=1, max_length=4096)]
    kind: Literal["file", "symlink"]
    sha256: Digest | None = None
    size: Annotated[int, Field(ge=0)] = 0
    executable: bool = False
    target: Annotated[str, Field(max_length=4096)] | None = None

    @model_validator(mode="after")
    def _fields_match_kind(self) -> TreeEntry:
        if self.kind == "file" and (self.sha256 is None or self.target is not None):
            raise ValueError(f"{self.path}: a file has a sha256 and no target")
        if self.kind == "symlink" and (self.target is None or self.sha256 is not None
                                       or self.size or self.executable):
            raise ValueError(f"{self.path}: a symlink has a target and nothing else")
        return self


class SourceTree(Wire):
    """A crate's files as the farm receives them; named by tree_digest()."""

    entries: Annotated[list[TreeEntry], Field(max_length=200_000)]


class BlobQuery(Wire):
    """Which of these blobs does the farm lack?"""

    digests: Annotated[list[Digest], Field(max_length=200_000)]


class MissingBlobs(Wire):
    missing: list[Digest]


class GitSource(Wire):
    """A commit the farm fetches itself instead of receiving an upload."""

    url: Annotated[str, Field(min_length=1, max_length=2048)]
    rev: Annotated[str, Field(min_length=1, max_length=256)]


#: A git host as credentials are registered for it: a DNS name or an IPv4 address, lower
#: case, no port (a credential serves every port of its host).
GIT_HOST = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
GitHost = Annotated[str, Field(max_length=253, pattern=GIT_HOST)]


class GitAuth(Wire):
    """A user name and token (a password or access token) for git over https."""

    # The token must never appear in a validation error, a repr or a log.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    username: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^:\s]+$")] = "git"
    token: Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^[^\s]+$",
                                repr=False)]


class GitCredentialView(Wire):
    """A registered credential as it is shown: its host and user, never its token."""

    host: GitHost
    username: str
    created_at: datetime


class FetchMessage(Reply):
    """The Celery payload of a git fetch: which commit, within which limits and time. It
    comes from the controller, so fields a newer one adds are ignored."""

    # A URL may hold a password: a validation error must not print it.
    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    fetch_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    url: str
    rev: str
    limits: SourceLimits
    timeout_s: int = Field(ge=1)
    #: the tenant's registered credential for the URL's host (https and http only)
    auth: GitAuth | None = Field(default=None, repr=False)


class FetchReport(Wire):
    """A worker's answer to a FetchMessage: the commit, its tree and the pack holding its
    files (by sha256, in the object store), or why there is none."""

    fetch_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    commit: Annotated[str, Field(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")] | None = None
    tree: SourceTree | None = None
    pack: Digest | None = None
    #: what the user is told when there is no source, and the path it concerns
    error: Annotated[str, Field(max_length=2000)] | None = None
    error_path: Annotated[str, Field(max_length=4096)] | None = None


class SourceStatus(Wire):
    """A stored source tree."""

    digest: SourceRef
    files: int
    total_bytes: int
    commit: str | None = None
    #: it has a Cargo.lock at its root, pinning its dependencies; a tree without one is
    #: resolved afresh by each build, so the result cache never serves its builds
    locked: bool = False


class WorkerState(StrEnum):
    """Where a worker stands, as the controller sees it."""

    #: heartbeating and taking jobs
    ONLINE = "online"
    #: asked to drain (or shutting down): takes no new jobs, finishes its running ones
    DRAINING = "draining"
    #: drained: no running jobs left, takes no new ones
    DRAINED = "drained"
    #: no heartbeat within the farm's bound
    LOST = "lost"


PositiveInt = Annotated[int, Field(ge=1)]


class WorkerLimits(Wire):
    """The hard limits a worker holds each of its builds to, as it reports them; None:
    it sets no such limit, or is too old to know it."""

    #: the build container's memory (its tmpfs pages included), processes and CPUs
    memory_bytes: PositiveInt | None = None
    pids: PositiveInt | None = None
    cpus: Annotated[float, Field(gt=0)] | None = None
    #: the job's writable disk (source, target dir, cargo home)
    disk_bytes: PositiveInt | None = None
    #: each tmpfs of the build container (/tmp and HOME)
    tmpfs_bytes: PositiveInt | None = None
    #: artifacts of one job: how many, and their bytes together
    artifact_count: PositiveInt | None = None
    artifact_bytes: PositiveInt | None = None
    #: the job's log; a longer line is cut there with a marker rather than failing it
    log_bytes: PositiveInt | None = None
    log_line_bytes: PositiveInt | None = None


class ToolchainOffer(Wire):
    """One toolchain a worker builds with: the operator's name for it, the builder image
    that holds it, and what that image's rustc says of itself (probed by the worker)."""

    name: ToolchainName
    image: Annotated[str, Field(min_length=1, max_length=300)]
    image_id: Annotated[str, Field(max_length=200)] | None = None
    #: the compiler's release ("1.63.0"), from `rustc -vV`
    release: Annotated[str, Field(max_length=100)]
    #: everything `rustc -vV` printed
    rustc: Annotated[str, Field(max_length=2000)]
    #: the targets whose standard library the image has (lib/rustlib/<triple>/lib)
    targets: Annotated[list[TargetName], Field(max_length=500)]
    #: the worker's default: what a build that names no toolchain gets
    default: bool = False


class WorkerHeartbeat(Wire):
    """What a worker reports about itself, on start and then periodically."""

    hostname: Annotated[str, Field(max_length=255)]
    arch: str
    #: queue name -> how this worker builds that queue's targets
    queues: dict[str, BuildMode]
    cpus: Annotated[float, Field(gt=0)]
    memory_bytes: Annotated[int, Field(gt=0)]
    builder_image: str
    builder_image_id: str | None = None
    targets: list[str]
    labels: dict[str, str] = {}
    version: str
    concurrency: Annotated[int, Field(ge=1)]
    #: the worker stopped taking jobs on its own (SIGTERM) or because it was asked to
    draining: bool = False
    #: the jobs it is running, as "<job id>-<attempt>": each one's lease
    running: list[str] = []
    #: how often it heartbeats, so the controller can tell a silent worker from a busy one
    interval_s: Annotated[float, Field(gt=0)] = 5.0
    #: the limits it holds each build to (None: a worker older than this field)
    limits: WorkerLimits | None = None
    #: the warm target dirs it keeps, as keys.affinity_key hashes: the placer sends a
    #: build of one of those projects back to it while it has a free slot
    warm: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=10_000)] = []
    #: the toolchains it builds with, its default first (empty: a worker older than this
    #: field, which builds every job with its builder image)
    toolchains: Annotated[list[ToolchainOffer], Field(max_length=64)] = []


class HeartbeatReply(Reply):
    """The controller's answer to a heartbeat: whether an operator asked it to drain,
    and how long a silent worker stays its own (after that it is lost and its jobs run
    elsewhere)."""

    drain: bool
    lost_after_s: Annotated[float, Field(gt=0)] | None = None


class WorkerView(Wire):
    """A worker with its state and the jobs the record says it runs."""

    name: str
    state: WorkerState
    last_seen: datetime
    started_at: datetime
    running_jobs: list[JobId]
    #: jobs of other tenants it runs, counted, never named (operators see them in running_jobs)
    other_tenants_jobs: int = 0
    drain_requested: bool = False
    info: WorkerHeartbeat


class ArchSummary(Wire):
    """One architecture's capacity and backlog."""

    arch: Arch
    queue: QueueKey
    #: online workers of this architecture
    workers_online: int
    #: online workers of other architectures with a cross toolchain for it
    cross_workers: int = 0
    #: online workers that build it under emulation
    emulating_workers: int = 0
    #: its jobs waiting to start, held by the placer or sent to a queue
    queue_depth: int
    oldest_waiting: datetime | None


class TargetPlace(Reply):
    """Where one target of one toolchain goes: which architectures' workers build it
    natively, with a cross toolchain or under emulation."""

    target: str
    #: the architecture it runs on (None: architecture-neutral, e.g. wasm32: it goes to
    #: whichever architecture offering it has capacity)
    arch: Arch | None
    native: list[Arch] = []
    cross: list[Arch] = []
    emulated: list[Arch] = []
    #: online workers offering it
    workers: int


class ToolchainTargets(Reply):
    """A toolchain the online workers offer, and the targets they build with it."""

    name: str
    releases: list[str]
    #: some online worker builds with it when a build names no toolchain
    default: bool
    targets: list[TargetPlace]


class FarmTargets(Reply):
    """What the farm can build now, per toolchain (from the online workers' heartbeats).
    A reply, so the CLI reads a newer controller's answer that has more fields."""

    toolchains: list[ToolchainTargets]


class Fleet(Wire):
    workers: list[WorkerView]
    arches: list[ArchSummary]


class FarmStats(Wire):
    """Counters since the controller started: what crossed the wire."""

    blobs_received: int
    #: file bytes received (uncompressed), alone or in packs
    blob_bytes_received: int
    packs_received: int
    #: bytes of packs as they crossed the wire (compressed)
    pack_bytes_received: int
    trees_created: int


class FieldProblem(Wire):
    """One field of a request that failed validation: where it is and what is wrong with
    it, never its value (a request may be megabytes, or a secret)."""

    #: "body", "query", "path" or "header", then the keys and indexes down to the field
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """Every error response of the API: an RFC 9457 problem document, served as
    `application/problem+json`. `type` names the kind of problem (docs/errors.md lists
    them), `detail` says what went wrong and what to do; the fields the error carries
    (`target`, `path`, `limit`, ...) are members beside them, which clients may ignore."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    title: str
    status: Annotated[int, Field(ge=400, le=599)]
    detail: str
    #: the fields that failed validation (problems of type invalid-request only)
    errors: list[FieldProblem] | None = None


class Role(StrEnum):
    """What a token may do; each role includes the ones before it."""

    #: read its own tenant's builds, logs, artifacts and sources
    READ = "read"
    #: read, and submit, cancel and upload
    SUBMIT = "submit"
    #: everything, across every tenant: tokens, drains
    OPERATOR = "operator"


#: a tenant's or a token's name: no "@", so "<token>@<tenant>" reads back unambiguously
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class TokenRequest(Wire):
    """What an operator asks for when issuing a token."""

    tenant: Name
    role: Role = Role.SUBMIT
    #: a label people recognise in listings and as the submitter of builds
    name: Name | None = None
    #: how long it is valid ("90d", "12h", "30m"); never expires when unset
    expires: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,5}[smhd]$")] | None = None


class TokenView(Wire):
    """A token as listings show it: never its secret, which only its issuing shows."""

    id: int
    tenant: str
    role: Role
    name: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class IssuedToken(Wire):
    """A token just issued, with its secret: shown this once, stored only as a hash."""

    token: str
    view: TokenView


#: The major version of the HTTP API. A CLI and a controller work together when theirs
#: are the same; a change an older peer would misread (a field removed or renamed, a
#: meaning changed) bumps it, while added fields and endpoints do not.
API_VERSION = 1


def crossfarm_version() -> str:
    """The installed crossfarm's version (0+unknown when run from a tree not installed)."""
    from importlib import metadata  # here: slow to import, and seldom needed

    try:
        return metadata.version("crossfarm")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class Health(Reply):
    """What /v1/health answers: the controller is up, its version, its API's major
    version, and the targets it builds. A reply, so a newer controller may add fields;
    a controller older than versions sends neither `version` nor `api`."""

    ok: bool
    version: str | None = None
    api: int | None = None
    targets: list[str] = []
