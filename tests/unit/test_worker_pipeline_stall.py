"""run_job on the fakes with a build step that hangs: the stall watchdog's limit reaches
every step that runs the crate's toolchain, and a stall ends the job as failed with a
reason that names the cause and what to do, never as a timeout."""


import pytest
from fakes import FakeCrates, FakeDocker, FakeReporter, FakeStorage, Replay

from crossfarm.shared.arch import Arch, BuildMode
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import CargoSpec, JobMessage
from crossfarm.worker.pipeline import Toolbox, run_job
from crossfarm.worker.settings import WorkerSettings

ARM = "aarch64-unknown-linux-gnu"
X86 = "x86_64-unknown-linux-gnu"
ARM64_IMAGE = "crossfarm/builder:1-arm64"
#: a crate with no dependencies: no crate to download, nothing but the build step
CRATE = {
    "Cargo.toml": b'[package]\nname = "sleepy"\nversion = "0.1.0"\nedition = "2021"\n',
    "Cargo.lock": b'version = 4\n\n[[package]]\nname = "sleepy"\nversion = "0.1.0"\n',
    "src/main.rs": b"fn main() {}\n",
}


def _run(tmp_path, target, queue, replays, files=CRATE, **settings):
    reporter, storage = FakeReporter(), FakeStorage()
    docker = FakeDocker(replays)
    tools = Toolbox(
        settings=WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch",
                                emulate_arches=[Arch.ARM64],
                                emulation_images={"arm64": ARM64_IMAGE}, **settings),
        host=Arch.AMD64, docker=docker, storage=storage, reporter=reporter,
        crates=FakeCrates())
    job = JobMessage(job_id="j-0123456789abcdef", build_id="b-0123456789abcdef",
                     target=target, attempt=1, source=storage.store_tree(files),
                     cargo=CargoSpec(), timeout_s=3600)
    state = run_job(tools, job, consumed_from=queue)
    [(_, outcome)] = reporter.outcomes
    return state, outcome, docker, reporter


HUNG = Replay(lines=[("stderr", "   Compiling sleepy v0.1.0 (/work/src)")], stalled=True)


def test_an_emulated_build_that_stalls_fails_as_a_qemu_hang_to_submit_again(tmp_path):
    state, outcome, docker, reporter = _run(tmp_path, ARM, "crossfarm.builds.arm64.emulated",
                                            [HUNG], stall_s=20)

    assert state is BuildState.FAILED
    assert outcome.reason == (
        "stalled: the build printed nothing and used 0.00 s of CPU time in 20 s, and was "
        "stopped: a known qemu-user hang under emulation (a deadlock after a fork); "
        "submit it again")
    assert outcome.exit_code is None
    [build] = docker.containers
    assert (build.step.image, build.stall_s) == (ARM64_IMAGE, 20)
    assert f"crossfarm: failed: {outcome.reason}" in reporter.lines
    [(_, start)] = reporter.starts
    assert start.mode is BuildMode.EMULATED


def test_a_native_build_that_stalls_fails_naming_the_setting_not_emulation(tmp_path):
    state, outcome, _, _ = _run(tmp_path, X86, "crossfarm.builds.amd64", [HUNG], stall_s=45)

    assert state is BuildState.FAILED
    assert outcome.reason.startswith("stalled: the build printed nothing and used 0.00 s of "
                                     "CPU time in 45 s, and was stopped: ")
    assert "qemu" not in outcome.reason
    assert "CROSSFARM_STALL_S" in outcome.reason
    assert "timeout" not in outcome.reason


def test_the_lock_step_runs_under_the_stall_limit_too(tmp_path):
    # no Cargo.lock: the lock step (network on, the target's image) runs first, and hangs
    unlocked = {path: data for path, data in CRATE.items() if path != "Cargo.lock"}
    state, outcome, docker, _ = _run(tmp_path, ARM, "crossfarm.builds.arm64.emulated",
                                     [Replay(stalled=True)], files=unlocked, stall_s=30)

    assert state is BuildState.FAILED
    assert outcome.reason.startswith("stalled: ")
    [lock] = docker.containers
    assert lock.step.network
    assert lock.stall_s == 30


@pytest.mark.parametrize("stall_s", [0, 600])
def test_every_build_step_gets_the_workers_stall_limit(tmp_path, stall_s):
    state, _, docker, _ = _run(tmp_path, X86, "crossfarm.builds.amd64", [Replay(exit_code=101)],
                               stall_s=stall_s)

    assert state is BuildState.FAILED  # cargo's own failure, not a stall
    [build] = docker.containers
    assert build.stall_s == stall_s
