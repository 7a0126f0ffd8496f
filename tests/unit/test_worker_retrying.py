"""Retry: a storage step is tried again with backoff inside its window, stops at once
when the job is cancelled, and fails naming how long it tried."""

from itertools import islice

import pytest

from crossfarm.shared.errors import BuildCancelled, StorageError
from crossfarm.worker.retrying import Retry, delays


class Clock:
    """Fake time: sleeping moves it forward."""

    def __init__(self):
        self.now = 100.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def _retry(clock, window_s=60.0, deadline=10_000.0, stop=lambda: None):
    said = []
    retry = Retry(window_s=window_s, deadline=deadline, stop=stop, say=said.append,
                  sleep=clock.sleep, clock=clock)
    return retry, said


def _flaky(failures):
    calls = []

    def step():
        calls.append(1)
        if len(calls) <= failures:
            raise StorageError("object store unreachable (k): connection refused")
        return "uploaded"

    return step, calls


def test_delays_double_up_to_a_cap():
    assert list(islice(delays(), 7)) == [1, 2, 4, 8, 15, 15, 15]


def test_a_step_that_works_runs_once_and_says_nothing():
    clock = Clock()
    retry, said = _retry(clock)
    step, calls = _flaky(0)

    assert retry.run("artifact upload", step) == "uploaded"
    assert (len(calls), said, clock.slept) == (1, [], [])


def test_a_short_outage_is_ridden_out_and_each_retry_is_logged():
    clock = Clock()
    retry, said = _retry(clock)
    step, calls = _flaky(3)

    assert retry.run("artifact upload", step) == "uploaded"
    assert len(calls) == 4
    assert clock.now - 100.0 == pytest.approx(1 + 2 + 4)
    assert said == [f"crossfarm: artifact upload: object store unreachable (k): connection "
                    f"refused; retrying in {d} s" for d in (1, 2, 4)]


def test_an_outage_longer_than_the_window_fails_with_how_long_it_tried():
    clock = Clock()
    retry, _ = _retry(clock, window_s=20)
    step, calls = _flaky(100)

    with pytest.raises(StorageError) as caught:
        retry.run("artifact upload", step)
    # waits 1 + 2 + 4 + 8 = 15 s; the next wait (15 s) would pass the 20 s window
    assert len(calls) == 5
    assert caught.value.message.endswith("connection refused (5 tries over 15 s)")


def test_the_jobs_deadline_closes_the_window_early():
    clock = Clock()
    retry, _ = _retry(clock, window_s=600, deadline=100.0 + 5)
    step, calls = _flaky(100)

    with pytest.raises(StorageError):
        retry.run("artifact upload", step)
    assert len(calls) == 3  # waits 1 + 2; a 4 s wait would pass the deadline
    assert clock.now <= 105


def test_a_window_of_zero_means_no_retry():
    clock = Clock()
    retry, said = _retry(clock, window_s=0)
    step, calls = _flaky(1)

    with pytest.raises(StorageError):
        retry.run("source download", step)
    assert (len(calls), said) == (1, [])


def test_a_cancel_while_waiting_stops_the_job_without_another_try():
    clock = Clock()
    checks = []

    def stop():
        checks.append(clock.now)
        return "cancelled by user" if clock.now >= 101.5 else None

    retry, _ = _retry(clock, stop=stop)
    step, calls = _flaky(100)

    with pytest.raises(BuildCancelled, match="cancelled by user"):
        retry.run("artifact upload", step)
    assert len(calls) == 2  # tried, waited 1 s, tried, stopped half a second into 2 s
    assert clock.now == pytest.approx(101.5)


def test_damaged_stored_data_is_not_retried():
    clock = Clock()
    retry, said = _retry(clock)
    calls = []

    def step():
        calls.append(1)
        raise StorageError("blob ab arrived with other bytes", retryable=False)

    with pytest.raises(StorageError) as caught:
        retry.run("source download", step)
    assert (len(calls), said, caught.value.retryable) == (1, [], False)
