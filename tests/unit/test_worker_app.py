import pytest

from crossfarm.shared.arch import Arch
from crossfarm.worker.app import queues_for

AMD64_QUEUE = "crossfarm.builds.amd64"
ARM64_QUEUE = "crossfarm.builds.arm64"
AMD64_CROSS = "crossfarm.builds.amd64.cross"
ARM64_CROSS = "crossfarm.builds.arm64.cross"
AMD64_EMULATED = "crossfarm.builds.amd64.emulated"
ARM64_EMULATED = "crossfarm.builds.arm64.emulated"


@pytest.mark.parametrize(
    ("host", "cross", "queues"),
    [
        (Arch.AMD64, [], [AMD64_QUEUE]),
        (Arch.ARM64, [], [ARM64_QUEUE]),
        (Arch.AMD64, [Arch.ARM64], [AMD64_QUEUE, ARM64_CROSS]),
        (Arch.ARM64, [Arch.AMD64], [ARM64_QUEUE, AMD64_CROSS]),
        (Arch.AMD64, [Arch.AMD64], [AMD64_QUEUE]),
        (Arch.ARM64, [Arch.ARM64, Arch.AMD64], [ARM64_QUEUE, AMD64_CROSS]),
    ],
)
def test_the_host_queue_comes_first_and_once(host, cross, queues):
    assert queues_for(host, cross) == queues


# WorkerSettings parses CROSSFARM_CROSS_ARCHES=arm64,aarch64 to [ARM64, ARM64] and
# does not dedupe, so the worker would be started with the arm64 queue twice.
def test_a_cross_arch_named_twice_gives_one_queue():
    assert queues_for(Arch.AMD64, [Arch.ARM64, Arch.ARM64]) == [AMD64_QUEUE, ARM64_CROSS]


def test_a_worker_never_consumes_another_architectures_native_queue():
    queues = queues_for(Arch.AMD64, [Arch.ARM64], [Arch.ARM64])
    assert ARM64_QUEUE not in queues


@pytest.mark.parametrize(
    ("host", "emulate", "queues"),
    [
        (Arch.AMD64, [Arch.ARM64], [AMD64_QUEUE, ARM64_EMULATED]),
        (Arch.ARM64, [Arch.AMD64], [ARM64_QUEUE, AMD64_EMULATED]),
        (Arch.AMD64, [Arch.AMD64], [AMD64_QUEUE]),
        (Arch.AMD64, [Arch.ARM64, Arch.ARM64], [AMD64_QUEUE, ARM64_EMULATED]),
    ],
)
def test_emulated_architectures_add_their_emulated_queue(host, emulate, queues):
    assert queues_for(host, [], emulate) == queues


def test_cross_queues_come_before_emulated_ones():
    assert queues_for(Arch.AMD64, [Arch.ARM64], [Arch.ARM64]) == [
        AMD64_QUEUE, ARM64_CROSS, ARM64_EMULATED]


def test_a_worker_with_a_disk_budget_and_no_losetup_refuses_to_start(tmp_path):
    import subprocess
    import sys

    env = {"PATH": str(tmp_path), "CROSSFARM_JOB_DISK_BYTES": str(1 << 30),
           "CROSSFARM_SCRATCH_DIR": str(tmp_path / "scratch")}
    run = subprocess.run([sys.executable, "-m", "crossfarm.worker"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "CROSSFARM_JOB_DISK_BYTES needs losetup" in run.stderr
    assert "set CROSSFARM_JOB_DISK_BYTES=0" in run.stderr
