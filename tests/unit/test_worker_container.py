"""Container.run's stop paths with a stand-in for docker-py's container object: whatever
stops the wait (a cancel, a lapsed lease) kills the container first, and a failing kill
never hides why it was stopped."""

import time

import pytest

from crossfarm.shared.errors import BuildCancelled, LeaseLost
from crossfarm.worker.container import Container


class RawContainer:
    """Started, never finishing; its output stream is empty."""

    def __init__(self, kill_fails=False):
        self.kill_fails, self.killed, self.started = kill_fails, 0, False

    def attach(self, **_):
        return iter(())

    def start(self):
        self.started = True

    def wait(self, timeout):
        raise AssertionError("the stop check comes before any wait")

    def kill(self):
        self.killed += 1
        if self.kill_fails:
            raise OSError("engine socket vanished")


def _lapsed():
    raise LeaseLost("cut off from the controller for 13 s")


@pytest.mark.parametrize("kill_fails", [False, True])
def test_a_lapsed_lease_kills_the_container_and_says_why(kill_fails):
    raw = RawContainer(kill_fails)
    with pytest.raises(LeaseLost, match="cut off from the controller"):
        Container(raw).run(lambda s, line: None, time.monotonic() + 60, _lapsed)
    assert raw.started
    assert raw.killed == 1


def test_a_cancel_kills_the_container_once():
    raw = RawContainer()
    with pytest.raises(BuildCancelled, match="cancelled"):
        Container(raw).run(lambda s, line: None, time.monotonic() + 60, lambda: "cancelled")
    assert raw.killed >= 1
