import pytest

from crossfarm.shared.arch import Arch
from crossfarm.worker.app import queues_for

AMD64_QUEUE = "crossfarm.builds.amd64"
ARM64_QUEUE = "crossfarm.builds.arm64"


@pytest.mark.parametrize(
    ("host", "cross", "queues"),
    [
        (Arch.AMD64, [], [AMD64_QUEUE]),
        (Arch.ARM64, [], [ARM64_QUEUE]),
        (Arch.AMD64, [Arch.ARM64], [AMD64_QUEUE, ARM64_QUEUE]),
        (Arch.ARM64, [Arch.AMD64], [ARM64_QUEUE, AMD64_QUEUE]),
        (Arch.AMD64, [Arch.AMD64], [AMD64_QUEUE]),
        (Arch.ARM64, [Arch.ARM64, Arch.AMD64], [ARM64_QUEUE, AMD64_QUEUE]),
    ],
)
def test_the_host_queue_comes_first_and_once(host, cross, queues):
    assert queues_for(host, cross) == queues


# WorkerSettings parses CROSSFARM_CROSS_ARCHES=arm64,aarch64 to [ARM64, ARM64] and
# does not dedupe, so the worker would be started with the arm64 queue twice.
def test_a_cross_arch_named_twice_gives_one_queue():
    assert queues_for(Arch.AMD64, [Arch.ARM64, Arch.ARM64]) == [AMD64_QUEUE, ARM64_QUEUE]
