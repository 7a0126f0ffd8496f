"""`crossfarm test`: `cargo test` for each target on the farm, on a worker of the
target's own architecture (or under emulation with --placement emulate-ok; a cross
toolchain builds the tests but cannot run them, and says so), then per target how many
tests passed, failed and were ignored. Exit 1 when any target failed."""

from __future__ import annotations

import sys
from typing import TextIO

from crossfarm.client.api import FarmClient
from crossfarm.client.build import BuildOptions, run_build
from crossfarm.client.config import Config, CrossConfig
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import BuildView, Command, JobView


def run_test(client: FarmClient, config: Config, cross: CrossConfig, options: BuildOptions
             ) -> int:
    """Run the tests `options` ask for (a cargo spec of command test, as CargoOptions
    makes it for crossfarm test); with the spec's no_run, the test binaries come back as
    artifacts instead. The exit code."""
    if options.cargo.command is not Command.TEST:
        raise ValueError(f"run_test takes a test spec, not {options.cargo.command.value}")
    return run_build(client, config, cross, options, summary=print_summary)


def summary_line(job: JobView) -> str:
    """One target's outcome in words: its counts, or why there are none."""
    tests = job.tests
    if tests is None:
        if job.state is BuildState.SUCCEEDED:
            return f"{job.target}: no test results reported"
        return f"{job.target}: {job.state.value}" + (f": {job.reason}" if job.reason else "")
    if not tests.ran:
        return f"{job.target}: tests built, not run ({job.mode.value if job.mode else '?'})"
    line = (f"{job.target}: {tests.passed} passed, {tests.failed} failed, "
            f"{tests.ignored} ignored")
    if tests.filtered_out:
        line += f", {tests.filtered_out} filtered out"
    return line + f" ({tests.suites} test binar{'y' if tests.suites == 1 else 'ies'})"


def print_summary(view: BuildView, out: TextIO = sys.stdout) -> None:
    print("test results:", file=out)
    for job in view.jobs:
        print(f"  {summary_line(job)}", file=out)
    for job in view.jobs:
        if job.rustc:
            print(f"  {job.target}: built by {job.rustc.splitlines()[0]}", file=out)
