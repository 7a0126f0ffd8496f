"""The worker's lease: renewed by each acknowledged heartbeat, lapsed once the worker
has been cut off for twice the controller's bound, shared through one file."""

from fakes import FakeReporter

from crossfarm.shared.arch import Arch
from crossfarm.shared.errors import ControllerError
from crossfarm.shared.wire import HeartbeatReply
from crossfarm.worker.heartbeat import DrainSwitch, Heartbeat, describe
from crossfarm.worker.lease import Lease
from crossfarm.worker.settings import WorkerSettings


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_a_worker_that_never_heard_from_the_controller_keeps_its_jobs(tmp_path):
    assert Lease(tmp_path / "lease.json").lapsed() is None


def test_the_lease_holds_for_twice_the_controllers_bound_then_lapses(tmp_path):
    clock = Clock()
    lease = Lease(tmp_path / "lease.json", clock)
    lease.renewed(lost_after_s=30)

    clock.now += 60
    assert lease.lapsed() is None
    clock.now += 1
    assert lease.lapsed() == ("cut off from the controller for 61 s (it calls a worker lost "
                              "after 30 s): the job runs again elsewhere, so this build stops")
    lease.renewed(lost_after_s=30)
    assert lease.lapsed() is None


def test_another_process_reads_the_same_lease(tmp_path):
    clock = Clock()
    Lease(tmp_path / "lease.json", clock).renewed(lost_after_s=5)
    clock.now += 11
    assert Lease(tmp_path / "lease.json", clock).lapsed() is not None


def test_a_new_worker_process_forgets_the_lease_of_its_earlier_life(tmp_path):
    clock = Clock()
    lease = Lease(tmp_path / "lease.json", clock)
    lease.renewed(lost_after_s=5)
    clock.now += 3600
    lease.forget()
    assert lease.lapsed() is None


def test_a_garbled_lease_file_fences_nothing(tmp_path):
    (tmp_path / "lease.json").write_text('{"acked_at": "soon"')
    assert Lease(tmp_path / "lease.json").lapsed() is None


def _switch():
    return DrainSwitch("w1", lambda on: None, lambda: False)


def test_only_an_acknowledged_heartbeat_renews_the_lease(tmp_path):
    clock = Clock()
    lease = Lease(tmp_path / "lease.json", clock)
    settings = WorkerSettings(worker_name="w1")
    replies = [HeartbeatReply(drain=False, lost_after_s=10),
               ControllerError("the controller is unreachable: link down")]
    beat = Heartbeat(FakeReporter(replies=replies), "w1",
                     lambda: describe(settings, Arch.AMD64, None), _switch(), lease)

    beat.beat()
    clock.now += 15
    beat.beat()  # fails: the lease is not renewed
    clock.now += 6
    assert lease.lapsed() is not None


def test_a_lease_that_cannot_be_written_does_not_stop_the_heartbeat(tmp_path):
    (tmp_path / "file").write_text("")
    lease = Lease(tmp_path / "file" / "lease.json")  # its folder is a file: OSError
    settings = WorkerSettings(worker_name="w1")
    reporter = FakeReporter(replies=[HeartbeatReply(drain=False, lost_after_s=10)] * 2)
    beat = Heartbeat(reporter, "w1", lambda: describe(settings, Arch.AMD64, None),
                     _switch(), lease)

    beat.beat()
    beat.beat()
    assert len(reporter.beats) == 2  # both beats went out
