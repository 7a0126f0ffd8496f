"""The cargo command lines of a job's two steps: fetch (network on), build (network off)."""

from __future__ import annotations

from crossfarm.shared.wire import JobMessage

#: Where the job volume and the source sit inside the builder container.
WORK = "/work"
SRC = f"{WORK}/src"
TARGET_DIR = f"{WORK}/target"


def fetch_command(job: JobMessage, locked: bool) -> list[str]:
    """Download the dependencies for this target into the shared cargo home."""
    return ["cargo", "fetch", "--target", job.target, *(["--locked"] if locked else [])]


def build_command(job: JobMessage, locked: bool, jobs: int) -> list[str]:
    """Compile with no network; JSON messages on stdout name the artifacts."""
    command = [
        "cargo", "build", "--offline", "--target", job.target, "--profile", job.cargo.profile,
        "--message-format=json-render-diagnostics", "--jobs", str(jobs),
    ]
    if locked:
        command.append("--locked")
    return command + job.cargo.flags()
