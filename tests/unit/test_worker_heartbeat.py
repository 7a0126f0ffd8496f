import socket
import threading

from fakes import FakeDocker, FakeReporter

from crossfarm.shared.arch import Arch, BuildMode
from crossfarm.shared.errors import ControllerError
from crossfarm.shared.wire import HeartbeatReply, ToolchainOffer, WorkerLimits
from crossfarm.worker.heartbeat import (
    ConsumerWatchdog,
    ContainerReaper,
    DrainSwitch,
    Heartbeat,
    Ticker,
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


def test_the_heartbeat_announces_the_toolchains_it_was_given_default_first():
    offers = [ToolchainOffer(name=name, image=f"img-{name}", release=f"{name}.0",
                             rustc=f"release: {name}.0", targets=["x86_64-unknown-linux-gnu"],
                             default=name == "1.96") for name in ("1.96", "1.63")]
    info = describe(_settings(), Arch.AMD64, None, toolchains=offers)
    assert [(o.name, o.default) for o in info.toolchains] == [("1.96", True), ("1.63", False)]
    assert describe(_settings(), Arch.AMD64, None).toolchains == []


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


def test_the_description_carries_every_limit_the_worker_holds_builds_to():
    settings = _settings(build_pids=512, job_disk_bytes=2 * 1024**3,
                         build_tmpfs_bytes=64 * 1024**2, artifact_max_count=10,
                         artifact_max_bytes=1024**3, log_max_bytes=8 * 1024**2,
                         log_line_max_bytes=4096)
    limits = describe(settings, Arch.AMD64, None).limits
    assert limits == WorkerLimits(
        memory_bytes=4 * 1024**3, pids=512, cpus=6.0, disk_bytes=2 * 1024**3,
        tmpfs_bytes=64 * 1024**2, artifact_count=10, artifact_bytes=1024**3,
        log_bytes=8 * 1024**2, log_line_bytes=4096)


def test_a_worker_without_a_disk_budget_reports_no_disk_limit():
    limits = describe(_settings(job_disk_bytes=0), Arch.AMD64, None).limits
    assert limits is not None
    assert limits.disk_bytes is None


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


def test_the_consumer_is_asked_at_most_once_in_ten_seconds():
    asked = []
    clock = Clock()
    watchdog = ConsumerWatchdog("w1", lambda: asked.append(1) or True, set, clock=clock)
    watchdog.check()
    clock.now += 9
    watchdog.check()
    clock.now += 1
    watchdog.check()
    assert len(asked) == 2


def test_a_consumer_that_answers_again_is_no_longer_stuck():
    answers = iter([False, True])
    clock = Clock()
    exits = []
    watchdog = ConsumerWatchdog("w1", lambda: next(answers), lambda: {"j-1-1"},
                                give_up_s=45, exit=exits.append, clock=clock)
    clock.now += 50
    watchdog.check()
    assert watchdog.stuck
    clock.now += 10
    watchdog.check()
    assert not watchdog.stuck
    assert exits == []


def _switch(stuck=False):
    consumed = []
    return DrainSwitch("w1", consumed.append, lambda: stuck), consumed


def test_an_operators_drain_stops_consuming_and_an_undrain_resumes_it():
    switch, consumed = _switch()
    switch.operator_wants(True)
    assert switch.draining
    switch.operator_wants(True)  # the same wish again changes nothing
    switch.operator_wants(False)
    assert not switch.draining
    assert consumed == [False, True]


def test_a_worker_shutting_down_stays_draining_whatever_the_operator_says():
    switch, consumed = _switch()
    switch.shut_down()
    switch.operator_wants(True)
    switch.operator_wants(False)
    assert switch.draining
    assert consumed == []


def test_a_stuck_consumer_drains_the_worker_but_leaves_the_consumer_alone():
    switch, consumed = _switch(stuck=True)
    assert switch.draining
    assert consumed == []


def _heartbeat(replies=()):
    settings = WorkerSettings(worker_name="w1")
    reporter = FakeReporter(replies=replies)
    switch, consumed = _switch()
    beat = Heartbeat(reporter, "w1", lambda: describe(settings, Arch.AMD64, None), switch)
    return beat, reporter, consumed


def test_only_the_first_acknowledged_heartbeat_is_a_fresh_start():
    beat, reporter, _ = _heartbeat(replies=[ControllerError("the controller is unreachable")])
    beat.beat()  # fails: the next one is still the first the controller hears
    beat.beat()
    beat.beat()
    assert [fresh for _, fresh in reporter.beats] == [True, True, False]


def test_a_drain_in_the_reply_stops_consuming_and_the_next_heartbeat_says_draining():
    beat, reporter, consumed = _heartbeat(replies=[HeartbeatReply(drain=True)] * 2)
    beat.beat()
    beat.beat()
    assert [info.draining for info, _ in reporter.beats] == [False, True]
    assert consumed == [False]


def test_a_worker_shutting_down_says_so_at_once():
    beat, reporter, consumed = _heartbeat()
    beat.shutting_down()
    assert reporter.beats[-1][0].draining
    assert consumed == []


def test_at_start_every_leftover_container_of_the_worker_is_reaped():
    docker = FakeDocker()
    docker.leftovers = {"j-1-1", "j-2-1"}
    ContainerReaper(docker, "w1", lambda: {"j-1-1"}).reap_leftovers()
    assert docker.leftovers == set()


def test_later_only_containers_of_no_running_task_are_reaped():
    docker = FakeDocker()
    docker.leftovers = {"j-1-1", "j-2-1"}
    ContainerReaper(docker, "w1", lambda: {"j-1-1"}).reap_orphans()
    assert docker.leftovers == {"j-1-1"}


def test_a_failing_chore_does_not_stop_the_ones_after_it():
    ran = []

    def fails():
        ran.append("fails")
        raise ControllerError("boom")

    Ticker(1.0, [lambda: ran.append("watch"), fails, lambda: ran.append("reap")]).tick()
    assert ran == ["watch", "fails", "reap"]


def test_the_ticker_runs_its_chores_on_its_own_thread_until_stopped():
    ticked = threading.Event()
    ticker = Ticker(0.01, [ticked.set])
    ticker.start()
    assert ticked.wait(5)
    ticker.stop()


def _heartbeat_lines(caplog):
    return [r for r in caplog.records if r.name == "crossfarm.worker.heartbeat"]


def test_heartbeats_are_logged_only_when_their_outcome_changes(caplog):
    away = ControllerError("the controller is unreachable")
    beat, _, _ = _heartbeat(replies=[HeartbeatReply(drain=False)] * 3 + [away] * 4
                            + [HeartbeatReply(drain=False)] * 3)
    with caplog.at_level("INFO", logger="crossfarm.worker.heartbeat"):
        for _ in range(10):
            beat.beat()
    said = [(r.levelname, r.getMessage()) for r in _heartbeat_lines(caplog)]
    assert said == [
        ("INFO", "w1: heartbeats reach the controller"),
        ("WARNING", "w1: heartbeat to the controller failed: the controller is unreachable "
                    "(logged again only when this changes)"),
        ("INFO", "w1: heartbeats reach the controller again, after 4 failed"),
    ]


def test_a_heartbeat_failing_for_another_reason_is_logged_again(caplog):
    beat, _, _ = _heartbeat(replies=[ControllerError("refused: 401"),
                                     ControllerError("refused: 401"),
                                     ControllerError("connection reset")])
    with caplog.at_level("INFO", logger="crossfarm.worker.heartbeat"):
        for _ in range(3):
            beat.beat()
    warnings = [r.getMessage() for r in _heartbeat_lines(caplog) if r.levelname == "WARNING"]
    assert len(warnings) == 2
    assert "refused: 401" in warnings[0]
    assert "connection reset" in warnings[1]
