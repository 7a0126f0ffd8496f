"""The cargo command lines of a job: the build (network off), and for a crate with no
Cargo.lock, making one (network on, with none of the crate's configuration)."""

from __future__ import annotations

from crossfarm.shared.wire import Command, JobMessage

#: Where the job volume and the source sit inside the builder container.
WORK = "/work"
SRC = f"{WORK}/src"
TARGET_DIR = f"{WORK}/target"
#: A warm build's target dir: in the warm volume, mounted at WARM (worker/warm.py). The
#: volume's root belongs to root, so cargo's dir is a folder in it the build user owns.
WARM = f"{WORK}/warm"
WARM_TARGET = f"{WARM}/target"


#: Resolves the manifests against the registry's index; builds nothing, runs no crate code.
LOCK_COMMAND = ["cargo", "generate-lockfile"]


def linker_variable(target: str) -> str:
    """The variable that names cargo's linker for `target`, which beats any config file."""
    return f"CARGO_TARGET_{target.upper().replace('-', '_').replace('.', '_')}_LINKER"


def build_command(job: JobMessage, locked: bool, jobs: int, run_tests: bool = True
                  ) -> list[str]:
    """Compile (and for a test job, run the tests) with no network; JSON messages on
    stdout name the artifacts, and libtest's output follows them on the same stdout.
    A test job whose tests cannot run here (`run_tests` False) builds them only. The
    job's own flags come last; cargo refuses a flag given twice (`--locked --locked`),
    so the farm's --offline, --locked and --jobs go in only where the job's do not say
    them (the allow-list refuses --no-run and --no-fail-fast: those are the farm's)."""
    asked = job.cargo.flags()
    test = job.cargo.command is Command.TEST
    command = [
        "cargo", job.cargo.command.value, "--target", job.target,
        "--profile", job.cargo.profile, "--message-format=json-render-diagnostics",
    ]
    if "--offline" not in asked:
        command.append("--offline")
    if not any(arg in ("-j", "--jobs") or arg.startswith(("-j", "--jobs=")) for arg in asked):
        command += ["--jobs", str(jobs)]
    if locked and "--locked" not in asked:
        command.append("--locked")
    if test and (job.cargo.no_run or not run_tests):
        command.append("--no-run")
    elif test:
        # every test binary runs, so the counts cover all of them, not up to the first
        # failing one
        command.append("--no-fail-fast")
    return command + asked
