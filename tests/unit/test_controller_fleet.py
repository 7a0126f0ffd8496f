from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from crossfarm.controller.fleet import heartbeat, worker_state
from crossfarm.controller.settings import ControllerSettings
from crossfarm.shared.wire import WorkerState

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("silence", [timedelta(0), timedelta(seconds=14), timedelta(seconds=15)])
def test_a_worker_heard_from_within_the_bound_is_online(silence):
    assert worker_state(NOW - silence, NOW, lost_after_s=15) is WorkerState.ONLINE


@pytest.mark.parametrize(
    "silence", [timedelta(seconds=15, microseconds=1), timedelta(seconds=16), timedelta(days=1)]
)
def test_a_worker_silent_past_the_bound_is_lost(silence):
    assert worker_state(NOW - silence, NOW, lost_after_s=15) is WorkerState.LOST


def test_a_heartbeat_stamped_slightly_ahead_of_the_controller_clock_is_online():
    assert worker_state(NOW + timedelta(seconds=2), NOW, lost_after_s=15) is WorkerState.ONLINE


def test_a_worker_asked_to_drain_is_draining_until_it_confirms():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert worker_state(now, now, 30, requested=True) is WorkerState.DRAINING


def test_a_confirmed_drain_with_running_jobs_is_draining_and_without_them_drained():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert worker_state(now, now, 30, confirmed=True, running=1) is WorkerState.DRAINING
    assert worker_state(now, now, 30, confirmed=True, running=0) is WorkerState.DRAINED


def test_a_silent_draining_worker_is_lost():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert worker_state(now - timedelta(seconds=31), now, 30, confirmed=True) is WorkerState.LOST


def test_a_heartbeat_is_answered_with_the_drain_wish_and_the_bound_the_worker_is_held_to():
    store = SimpleNamespace(workers=SimpleNamespace(heartbeat=lambda name, info, fresh_start: True))
    farm = SimpleNamespace(store=store, settings=ControllerSettings(lost_after_s=12))
    reply = heartbeat(farm, "w1", info=None, fresh_start=False)
    assert (reply.drain, reply.lost_after_s) == (True, 12)
