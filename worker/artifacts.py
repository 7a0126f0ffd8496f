"""Which files a build produced, from cargo's own JSON messages, and the manifest for them.

An artifact is stored once per tenant: a job whose file has the bytes of one the tenant
already holds (a rebuild whose binary did not change) names that object in its
manifest instead of uploading it again. The store keeps one note per tenant and sha256
(keys.held_artifact_key), written once the job that uploaded the object succeeded; a
note is believed only if the object it names is an artifact whose size and recorded
sha256 are the file's, and the controller checks the reference against its own record
of the earlier job (controller/jobs.py).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from crossfarm.shared import keys
from crossfarm.shared.errors import BuildError, LimitExceeded, NotFound
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.storage import ObjectStore
from crossfarm.shared.tree import sha256_file
from crossfarm.shared.wire import ArtifactEntry, Manifest, TestCounts

#: Library kinds whose files users ship; rlibs are cargo-internal and stay behind.
_SHIPPED_LIB_KINDS = frozenset({"cdylib", "staticlib", "dylib"})
_SHIPPED_SUFFIXES = (".so", ".a", ".dylib", ".dll", ".lib", ".wasm")
#: Where `cargo build --timings` writes its HTML report under the target dir (the
#: timestamped copy beside it holds the same report): it ships as an artifact.
TIMINGS_REPORT = "cargo-timings/cargo-timing.html"


def wants_timings(cargo_args: list[str]) -> bool:
    """Whether the build asked cargo for its timing report."""
    return any(arg == "--timings" or arg.startswith("--timings=") for arg in cargo_args)


def profile_dir(profile: str) -> str:
    """The directory under target/<triple>/ that cargo uses for a profile."""
    return {"dev": "debug", "test": "debug", "bench": "release"}.get(profile, profile)


#: Which files of a run are its artifacts: what users ship (a build), the test
#: executables (`cargo test --no-run`), or none (a test run: its result is the counts).
Wanted = Literal["shipped", "tests", "none"]


def artifact_paths(message: dict[str, Any], wanted: Wanted = "shipped") -> list[str]:
    """The wanted files named by one cargo `compiler-artifact` message (none for others)."""
    if message.get("reason") != "compiler-artifact" or wanted == "none":
        return []
    if wanted == "tests":
        return test_executable(message)
    target = message.get("target")
    kinds = set(target.get("kind", [])) if isinstance(target, dict) else set()
    executable = message.get("executable")
    if isinstance(executable, str) and kinds & {"bin", "example"}:
        return [executable]
    if kinds & _SHIPPED_LIB_KINDS:
        files = message.get("filenames") or []
        return [f for f in files if isinstance(f, str) and f.endswith(_SHIPPED_SUFFIXES)]
    return []


def test_executable(message: dict[str, Any]) -> list[str]:
    """The test binary a `compiler-artifact` message names: built with the test profile
    flag (unit tests of a lib or bin, an integration test), with an executable."""
    profile = message.get("profile")
    executable = message.get("executable")
    if isinstance(profile, dict) and profile.get("test") is True and isinstance(executable, str):
        return [executable]
    return []


def unit_of(message: dict[str, Any]) -> tuple[str, bool] | None:
    """(target name (kinds), fresh) of a `compiler-artifact` message; None for others."""
    target = message.get("target")
    if message.get("reason") != "compiler-artifact" or not isinstance(target, dict):
        return None
    kinds = target.get("kind")
    kinds = kinds if isinstance(kinds, list) else []
    return f"{target.get('name')} ({','.join(map(str, kinds))})", message.get("fresh") is True


class ArtifactCollector:
    """Reads cargo's stdout (JSON lines) and remembers every shipped artifact path.

    The build's own code can print to that stdout too (a build script writing to
    /proc/1/fd/1), so every message is untrusted: a path outside `target_dir`, or more
    than `max_count` artifacts, is remembered as a refusal that check() raises once the
    step is over (the collector runs on the log pump's thread, which must go on)."""

    def __init__(self, target_dir: str, max_count: int, wanted: Wanted = "shipped") -> None:
        self._root = posixpath.normpath(target_dir) + "/"
        self._max_count = max_count
        self._wanted: Wanted = wanted
        self.paths: list[str] = []
        self.refusal: BuildError | None = None
        #: each unit cargo reported, as (target name (kinds), fresh): fresh units were
        #: not rebuilt (what a warm build reports; build code could forge these lines,
        #: but they only feed its own log)
        self.units: list[tuple[str, bool]] = []

    def feed(self, line: str) -> bool:
        """Take one stdout line; False if it was not a cargo JSON message."""
        try:
            message = json.loads(line)
        except ValueError:
            return False
        if not isinstance(message, dict):
            return False
        if (unit := unit_of(message)) is not None:
            self.units.append(unit)
        for path in artifact_paths(message, self._wanted):
            self._take(path)
        return True

    def add_timings(self) -> None:
        """Ship cargo's timing report too (once the build has written it)."""
        self._take(self._root + TIMINGS_REPORT)

    def check(self) -> None:
        """Raise the first refusal, if any (BuildError or LimitExceeded)."""
        if self.refusal is not None:
            raise self.refusal

    def _take(self, path: str) -> None:
        if self.refusal is not None or path in self.paths:
            return
        if ".." in path.split("/") or not posixpath.normpath(path).startswith(self._root):
            self.refusal = BuildError(
                f"artifacts: cargo's output names {path!r}, outside the target dir "
                f"{self._root.rstrip('/')}: refused (build code can print forged cargo "
                "messages)")
        elif len(self.paths) >= self._max_count:
            self.refusal = LimitExceeded(
                "artifacts", f"the build names more than {self._max_count} artifacts",
                self._max_count, "CROSSFARM_ARTIFACT_MAX_COUNT")
        else:
            self.paths.append(path)


@dataclass(frozen=True)
class JobOutput:
    build_id: BuildId
    job_id: JobId
    target: str
    attempt: int
    profile: str
    #: the builder image that made the artifacts (None: the engine did not say)
    image_id: str | None = None
    #: what `rustc -vV` printed in that image (None: not probed, an emulated build)
    rustc: str | None = None
    #: a test job's counts
    tests: TestCounts | None = None


#: Finds a stored object with given bytes: (sha256, size) -> its key, or None.
HeldLookup = Callable[[str, int], str | None]


def build_manifest(job: JobOutput, files: list[Path], held: HeldLookup | None = None
                   ) -> Manifest:
    """The manifest of a job's local artifact files, with each one's size and sha256.
    Each key is the attempt's own for the name, unless `held` names a stored object
    with the same bytes."""
    entries = []
    for path in sorted(files):
        size, sha256 = path.stat().st_size, sha256_file(path)
        key = held(sha256, size) if held is not None else None
        entries.append(ArtifactEntry(
            name=path.name, size=size, sha256=sha256,
            key=key or keys.artifact_key(job.build_id, job.target, job.attempt, path.name),
            executable=bool(path.stat().st_mode & 0o111),
        ))
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"two artifacts share a name: {sorted(names)}")
    return Manifest(
        build_id=job.build_id, job_id=job.job_id, target=job.target, attempt=job.attempt,
        profile_dir=profile_dir(job.profile), artifacts=entries, image_id=job.image_id,
        rustc=job.rustc, tests=job.tests,
    )


def own_key(manifest: Manifest, entry: ArtifactEntry) -> bool:
    """Whether an entry's object is the attempt's own upload (not one stored before)."""
    return entry.key == keys.artifact_key(manifest.build_id, manifest.target,
                                          manifest.attempt, entry.name)


def held_lookup(storage: ObjectStore, tenant: str) -> HeldLookup:
    """Finds an artifact `tenant` already stores with given bytes, by the tenant's note
    of them: its key if that object is an artifact whose size and recorded sha256 are
    the ones asked for, else None (no note, a note that is not ours to believe, or an
    object gone or different). Storage errors propagate: the upload is retried."""
    def lookup(sha256: str, size: int) -> str | None:
        try:
            note = json.loads(storage.get_bytes(keys.held_artifact_key(tenant, sha256)))
        except NotFound:
            return None
        except ValueError:  # not JSON, not UTF-8: a note this worker never wrote
            return None
        key = note.get("key") if isinstance(note, dict) else None
        if not isinstance(key, str) or not _artifact_key(key):
            return None
        stored = storage.stat(key)
        if stored is None or stored.size != size or stored.sha256 != sha256:
            return None
        return key

    return lookup


def remember_held(storage: ObjectStore, tenant: str, manifest: Manifest) -> int:
    """Note, for later builds of `tenant`, each artifact this succeeded job uploaded
    itself; returns how many notes were written."""
    written = 0
    for entry in manifest.artifacts:
        if own_key(manifest, entry):
            note = {"key": entry.key, "size": entry.size, "sha256": entry.sha256}
            storage.put_bytes(keys.held_artifact_key(tenant, entry.sha256),
                              json.dumps(note).encode(), "application/json")
            written += 1
    return written


def _artifact_key(key: str) -> bool:
    """Whether `key` is exactly the key of some attempt's artifact."""
    try:
        build_id, target, attempt = keys.parse_job_key(key)
    except ValueError:
        return False
    name = key.rsplit("/", 1)[-1]
    return key == keys.artifact_key(build_id, target, attempt, name)
