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


@pytest.fixture
def fresh_module_app():
    """crossfarm.worker.app keeps the app it made on first access: forget it around a test."""
    import crossfarm.worker.app as module

    for name in ("app", "celery"):
        vars(module).pop(name, None)
    yield module
    for name in ("app", "celery"):
        vars(module).pop(name, None)


def test_celery_finds_an_app_in_the_worker_module_made_from_the_environment_on_access(
        fresh_module_app, monkeypatch):
    from celery.app.utils import find_app

    monkeypatch.setenv("CROSSFARM_REDIS_URL", "redis://127.0.0.1:1/7")
    monkeypatch.setenv("CROSSFARM_TASK_EVENTS", "1")
    assert "app" not in vars(fresh_module_app)  # importing it made none
    found = find_app("crossfarm.worker.app")
    assert found.conf.broker_url == "redis://127.0.0.1:1/7"
    assert found.conf.worker_send_task_events is True
    assert found.conf.task_send_sent_event is True
    assert find_app("crossfarm.worker.app") is found  # made once


def test_task_events_are_off_unless_the_setting_turns_them_on(fresh_module_app, monkeypatch):
    monkeypatch.delenv("CROSSFARM_TASK_EVENTS", raising=False)
    assert fresh_module_app.app.conf.worker_send_task_events is False
    assert fresh_module_app.app.conf.task_send_sent_event is False


def test_the_worker_module_has_no_other_made_up_attribute(fresh_module_app):
    with pytest.raises(AttributeError, match="no attribute 'flower'"):
        fresh_module_app.flower  # noqa: B018



def test_a_pool_process_whose_build_tools_cannot_be_made_at_start_up_still_starts(caplog):
    from crossfarm.worker.app import made_at_fork

    made = []

    def unreachable() -> None:
        made.append("tried")
        raise ConnectionError("no engine")

    made_at_fork(unreachable)()  # as Celery's worker_process_init calls it after a fork
    made_at_fork(lambda: made.append("made"))()

    assert made == ["tried", "made"]
    assert "build tools not made at start-up" in caplog.text
