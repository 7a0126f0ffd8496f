"""The stall watchdog's verdict on made-up samples: silence and idleness for the whole
limit is a stall; output, real CPU work or an unknown CPU time never is."""

import pytest

from crossfarm.worker.stall import IDLE_SHARE, Sample, Stalled, judge

SECOND = 10**9


def _first_stall(samples, limit_s):
    """Feed `samples` to judge in turn, as the container does; the first Stalled, or None."""
    mark = samples[0]
    for now in samples[1:]:
        verdict = judge(mark, now, limit_s)
        if isinstance(verdict, Stalled):
            return verdict
        mark = verdict
    return None


def _idle(seconds, cpu_per_s=0, printed=lambda t: 0, start_cpu=5 * SECOND):
    """One sample a second: `cpu_per_s` nanoseconds of CPU each second, `printed(t)` bytes."""
    return [Sample(at=float(t), printed=printed(t), cpu_ns=start_cpu + t * cpu_per_s)
            for t in range(seconds + 1)]


def test_a_silent_idle_step_is_stalled_once_quiet_for_the_limit():
    stall = _first_stall(_idle(100), limit_s=20)
    assert stall == Stalled(quiet_s=20.0, cpu_s=0.0)


def test_a_step_quiet_for_less_than_the_limit_is_not_stalled():
    assert _first_stall(_idle(19), limit_s=20) is None


def test_timer_ticks_under_the_idle_share_do_not_keep_a_hung_step_alive():
    # cargo waking twice a second under emulation: 2 ms of CPU a second, far under 1%
    stall = _first_stall(_idle(100, cpu_per_s=2 * 10**6), limit_s=20)
    assert stall is not None
    assert stall.quiet_s == 20.0
    assert stall.cpu_s == pytest.approx(0.04)


def test_a_step_using_cpu_is_never_stalled_however_silent():
    # a long link or one big crate: silent, but a core's worth of CPU
    assert _first_stall(_idle(3600, cpu_per_s=SECOND), limit_s=20) is None


def test_a_step_using_a_little_more_than_the_idle_share_is_never_stalled():
    busy = int(IDLE_SHARE * SECOND * 2)  # 2% of a core: slow, but working
    assert _first_stall(_idle(3600, cpu_per_s=busy), limit_s=20) is None


def test_output_starts_the_quiet_span_again():
    # one line every 15 s, no CPU time at all: never quiet for 20 s
    assert _first_stall(_idle(600, printed=lambda t: t // 15), limit_s=20) is None


def test_a_step_that_stops_printing_is_stalled_one_limit_after_its_last_output():
    stall = _first_stall(_idle(100, printed=lambda t: min(t, 30)), limit_s=20)
    assert stall == Stalled(quiet_s=20.0, cpu_s=0.0)
    assert _first_stall(_idle(49, printed=lambda t: min(t, 30)), limit_s=20) is None


def test_a_burst_of_work_after_a_hang_began_does_not_hide_it_unless_it_is_real_work():
    # 0.1 s of CPU once (a wake-up): under 1% of the 20 s limit, so the span goes on
    samples = [Sample(float(t), 0, 5 * SECOND + (SECOND // 10 if t >= 10 else 0))
               for t in range(30)]
    assert _first_stall(samples, limit_s=20) == Stalled(quiet_s=20.0, cpu_s=0.1)


def test_an_unknown_cpu_time_is_never_called_a_stall():
    samples = [Sample(at=float(t), printed=0, cpu_ns=None) for t in range(3600)]
    assert _first_stall(samples, limit_s=20) is None


def test_the_quiet_span_starts_at_the_first_cpu_time_read():
    samples = [Sample(at=float(t), printed=0, cpu_ns=None if t < 50 else 7 * SECOND)
               for t in range(100)]
    assert _first_stall(samples, limit_s=20) == Stalled(quiet_s=20.0, cpu_s=0.0)
    assert _first_stall(samples[:70], limit_s=20) is None


def test_samples_the_engine_could_not_read_keep_the_span_going():
    samples = [Sample(at=float(t), printed=0, cpu_ns=None if 5 <= t < 15 else SECOND)
               for t in range(30)]
    assert _first_stall(samples, limit_s=20) == Stalled(quiet_s=20.0, cpu_s=0.0)


def test_a_cpu_counter_that_went_back_is_progress_not_a_stall():
    mark = Sample(at=0.0, printed=0, cpu_ns=9 * SECOND)
    now = Sample(at=30.0, printed=0, cpu_ns=SECOND)
    assert judge(mark, now, limit_s=20) == now


def test_a_limit_of_zero_never_stalls():
    assert _first_stall(_idle(3600), limit_s=0) is None
