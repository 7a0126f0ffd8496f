"""Which files a build produced, from cargo's own JSON messages, and the manifest for them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossfarm.shared import keys
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.tree import sha256_file
from crossfarm.shared.wire import ArtifactEntry, Manifest

#: Library kinds whose files users ship; rlibs are cargo-internal and stay behind.
_SHIPPED_LIB_KINDS = frozenset({"cdylib", "staticlib", "dylib"})
_SHIPPED_SUFFIXES = (".so", ".a", ".dylib", ".dll", ".lib")


def profile_dir(profile: str) -> str:
    """The directory under target/<triple>/ that cargo uses for a profile."""
    return {"dev": "debug", "test": "debug", "bench": "release"}.get(profile, profile)


def artifact_paths(message: dict[str, Any]) -> list[str]:
    """The shipped files named by one cargo `compiler-artifact` message (none for others)."""
    if message.get("reason") != "compiler-artifact":
        return []
    target = message.get("target")
    kinds = set(target.get("kind", [])) if isinstance(target, dict) else set()
    executable = message.get("executable")
    if isinstance(executable, str) and kinds & {"bin", "example"}:
        return [executable]
    if kinds & _SHIPPED_LIB_KINDS:
        files = message.get("filenames") or []
        return [f for f in files if isinstance(f, str) and f.endswith(_SHIPPED_SUFFIXES)]
    return []


class ArtifactCollector:
    """Reads cargo's stdout (JSON lines) and remembers every shipped artifact path."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def feed(self, line: str) -> bool:
        """Take one stdout line; False if it was not a cargo JSON message."""
        try:
            message = json.loads(line)
        except ValueError:
            return False
        if not isinstance(message, dict):
            return False
        for path in artifact_paths(message):
            if path not in self.paths:
                self.paths.append(path)
        return True


@dataclass(frozen=True)
class JobOutput:
    build_id: BuildId
    job_id: JobId
    target: str
    attempt: int
    profile: str


def build_manifest(job: JobOutput, files: list[Path]) -> Manifest:
    """The manifest of a job's local artifact files, with each one's size and sha256."""
    entries = [
        ArtifactEntry(
            name=path.name,
            size=path.stat().st_size,
            sha256=sha256_file(path),
            key=keys.artifact_key(job.build_id, job.target, job.attempt, path.name),
            executable=bool(path.stat().st_mode & 0o111),
        )
        for path in sorted(files)
    ]
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"two artifacts share a name: {sorted(names)}")
    return Manifest(
        build_id=job.build_id, job_id=job.job_id, target=job.target, attempt=job.attempt,
        profile_dir=profile_dir(job.profile), artifacts=entries,
    )
