"""A build that waits at a gate the test opens, so a fault is injected while a build step
surely runs, whatever the speed of the machine: no test waits a fixed time and hopes.

The crate's build script says it has reached the gate (a file in the build container's
/tmp), then waits until the test opens it (another file there, made with `docker exec`).
A gate never opened holds the build until it is cancelled, killed or timed out.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from polling import until

_AT_GATE = "/tmp/crossfarm-at-gate"
_OPEN = "/tmp/crossfarm-gate-open"

#: build.rs of the hello-c fixture, stopped at the gate after its C code is built.
GATED_BUILD_RS = (
    "fn main() {\n"
    "    cc::Build::new().file(\"src/answer.c\").compile(\"answer\");\n"
    f"    std::fs::write(\"{_AT_GATE}\", b\"\").unwrap();\n"
    f"    while !std::path::Path::new(\"{_OPEN}\").exists() {{\n"
    "        std::thread::sleep(std::time::Duration::from_millis(100));\n"
    "    }\n"
    "}\n"
)


def gate(crate: Path) -> None:
    """Make `crate` (a copy of hello-c) stop at the gate in its build step."""
    (crate / "build.rs").write_text(GATED_BUILD_RS)


def _containers(job_id: str, attempt: int | None) -> list[str]:
    labels = [f"label=io.crossfarm.job={job_id}"]
    if attempt is not None:
        labels.append(f"label=io.crossfarm.attempt={attempt}")
    out = subprocess.run(["docker", "ps", "-q", *(f for label in labels
                                                  for f in ("--filter", label))],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def _exec(container: str, *command: str) -> bool:
    return subprocess.run(["docker", "exec", container, *command],
                          capture_output=True).returncode == 0


def waiting(job_id: str, attempt: int | None = None) -> str | None:
    """The running container of the job (of that attempt) whose build waits at the gate."""
    return next((c for c in _containers(job_id, attempt) if _exec(c, "test", "-e", _AT_GATE)),
                None)


def wait_at_gate(job_id: str, attempt: int | None = None, timeout: float = 300) -> str:
    """Wait until the job's build step has reached the gate; its container."""
    what = f"job {job_id}{f' attempt {attempt}' if attempt else ''} at the gate"
    return until(lambda: waiting(job_id, attempt), what, timeout)


def open_gate(job_id: str, attempt: int | None = None, timeout: float = 300) -> None:
    """Let the job's build (that attempt's) go on past the gate, once it has reached it."""
    container = wait_at_gate(job_id, attempt, timeout)
    assert _exec(container, "touch", _OPEN), f"could not open the gate in {container}"


def open_all(job_id: str) -> None:
    """Open the gate in every running container of the job that has reached it, now."""
    for container in _containers(job_id, None):
        if _exec(container, "test", "-e", _AT_GATE):
            _exec(container, "touch", _OPEN)
