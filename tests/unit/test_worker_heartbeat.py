import socket

from fakes import FakeReporter

from crossfarm.shared.arch import Arch, BuildMode
from crossfarm.worker.heartbeat import (
    ConsumerWatchdog,
    DrainSwitch,
    Heartbeat,
    describe,
)
from crossfarm.worker.settings import WorkerSettings

AMD64_QUEUE = "crossfarm.builds.amd64"
ARM64_QUEUE = "crossfarm.builds.arm64"
ARM64_CROSS = "crossfarm.builds.arm64.cross"
ARM64_EMULATED = "crossfarm.builds.arm64.emulated"
X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"


def _settings(**fields):
    return WorkerSettings(
        worker_name="w1",
        build_cpus=6.0,
        build_memory_bytes=4 * 1024**3,
        builder_image="crossfarm/builder:test",
        concurrency=2,
        labels={"rack": "r1"},
        **fields,
    )


def test_an_amd64_host_with_an_arm64_cross_toolchain_serves_its_queue_and_arm64s_cross_queue():
    info = describe(_settings(cross_arches=[Arch.ARM64]), Arch.AMD64, "sha256:abc")
    assert info.arch == "amd64"
    assert info.queues == {AMD64_QUEUE: BuildMode.NATIVE, ARM64_CROSS: BuildMode.CROSS}
    assert info.targets == [ARM, X86]


def test_an_amd64_host_that_emulates_arm64_serves_arm64s_emulated_queue():
    settings = _settings(emulate_arches=[Arch.ARM64],
                         emulation_images={"arm64": "crossfarm/builder-arm64:test"})
    info = describe(settings, Arch.AMD64, None)
    assert info.queues == {AMD64_QUEUE: BuildMode.NATIVE, ARM64_EMULATED: BuildMode.EMULATED}
    assert info.targets == [ARM, X86]


def test_a_host_with_both_a_cross_toolchain_and_emulation_lists_both_queues():
    settings = _settings(cross_arches=[Arch.ARM64], emulate_arches=[Arch.ARM64],
                         emulation_images={"arm64": "crossfarm/builder-arm64:test"})
    info = describe(settings, Arch.AMD64, None)
    assert info.queues == {
        AMD64_QUEUE: BuildMode.NATIVE,
        ARM64_CROSS: BuildMode.CROSS,
        ARM64_EMULATED: BuildMode.EMULATED,
    }
    assert info.targets == [ARM, X86]


def test_an_amd64_host_without_cross_serves_only_its_own_queue():
    info = describe(_settings(cross_arches=[]), Arch.AMD64, None)
    assert info.queues == {AMD64_QUEUE: BuildMode.NATIVE}
    assert info.targets == [X86]


def test_the_host_architecture_named_as_a_cross_arch_stays_native():
    info = describe(_settings(cross_arches=[Arch.ARM64]), Arch.ARM64, None)
    assert info.queues == {ARM64_QUEUE: BuildMode.NATIVE}
    assert info.targets == [ARM]


def test_the_description_carries_the_workers_resources_and_image():
    info = describe(_settings(), Arch.AMD64, "sha256:abc")
    assert (info.cpus, info.memory_bytes, info.concurrency) == (6.0, 4 * 1024**3, 2)
    assert (info.builder_image, info.builder_image_id) == ("crossfarm/builder:test", "sha256:abc")
    assert info.labels == {"rack": "r1"}
    assert info.hostname == socket.gethostname()
    assert info.version


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def _watched(consuming, running=()):
    """A watchdog and the heartbeat it makes say "draining", and `watch(now)` to run the
    watchdog's check at that time."""
    exits = []
    clock = Clock()
    settings = WorkerSettings(worker_name="w1")
    reporter = FakeReporter()
    watchdog = ConsumerWatchdog("w1", consuming, lambda: set(running), give_up_s=45,
                                exit=exits.append, clock=clock)
    switch = DrainSwitch("w1", lambda on: None, lambda: watchdog.stuck)
    beat = Heartbeat(reporter, "w1", lambda: describe(settings, Arch.AMD64, None, set(running)),
                     switch)

    def watch(now):
        clock.now = now
        watchdog.check()

    return watch, beat, exits, reporter


def test_a_worker_whose_consumer_answers_stays_online():
    watch, beat, exits, reporter = _watched(lambda: True)
    for t in range(0, 200, 10):
        watch(1000.0 + t)
    beat.beat()
    assert not reporter.beats[-1][0].draining
    assert exits == []


def test_a_silent_consumer_first_drains_the_worker_then_exits_it_once_idle():
    answers = iter([True] + [False] * 20)
    watch, beat, exits, reporter = _watched(lambda: next(answers), running={"j-1-1"})
    watch(1000.0)  # answers
    watch(1030.0)  # silent 30 s: within the bound
    beat.beat()
    assert not reporter.beats[-1][0].draining
    watch(1050.0)  # silent 50 s: gives up, but a build runs
    beat.beat()
    assert reporter.beats[-1][0].draining
    assert exits == []


def test_a_silent_consumer_with_nothing_running_exits_for_a_restart():
    answers = iter([True] + [False] * 20)
    watch, _, exits, _ = _watched(lambda: next(answers))
    watch(1000.0)
    watch(1050.0)
    assert exits == [3]
