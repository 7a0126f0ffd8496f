"""The stall watchdog's verdict: samples of a running build step in, a verdict out.

A step that prints nothing and uses next to no CPU time for CROSSFARM_STALL_S seconds
is stuck, not slow: a compiler or linker at work uses CPU, and cargo prints as units
finish. The case it is for is qemu-user's deadlock after a fork in a multi-threaded
program (cargo's parent and child waiting on futexes forever, seen with QEMU 7.2 and
10.0), which would otherwise hold an emulated build until its time limit.

The Docker adapter (worker/container.py) samples a running container about once a
second: its cgroup's CPU time and the bytes it has printed so far. `judge` decides.
"""

from __future__ import annotations

from dataclasses import dataclass

#: CPU time under this share of one core over the whole limit counts as none: a process
#: that only wakes on a timer (cargo's job queue ticks twice a second) is waiting, not
#: working. Measured over the limit, not per sample, so that a short burst now and then
#: does not start the quiet span again.
IDLE_SHARE = 0.01


@dataclass(frozen=True)
class Sample:
    """A running step at one moment."""

    #: time.monotonic() when it was taken
    at: float
    #: the bytes the step has printed so far, stdout and stderr together
    printed: int
    #: the CPU time its container has used so far, in nanoseconds; None: the engine did
    #: not say (a step is never called stalled on CPU time nobody read)
    cpu_ns: int | None


@dataclass(frozen=True)
class Stalled:
    """The verdict on a step that printed nothing and used `cpu_s` seconds of CPU time
    (next to none) in the last `quiet_s` seconds."""

    quiet_s: float
    cpu_s: float


def judge(mark: Sample, now: Sample, limit_s: float) -> Sample | Stalled:
    """The verdict on a step last seen making progress at `mark`, sampled again `now`:
    the sample to measure from next (`now` if the step printed or worked since `mark`,
    else `mark` itself), or Stalled once it has done neither for `limit_s` seconds.
    A limit of 0 turns the watchdog off: the verdict is then always a sample."""
    if now.printed != mark.printed:
        return now
    if now.cpu_ns is None:
        return mark  # unknown: neither progress nor a stall
    if mark.cpu_ns is None:
        return now  # the first CPU time read: the quiet span is measured from here
    cpu_s = (now.cpu_ns - mark.cpu_ns) / 1e9
    if cpu_s < 0 or cpu_s > IDLE_SHARE * limit_s:
        return now  # worked (a counter that went back is a new one, not a stall)
    quiet_s = now.at - mark.at
    if limit_s > 0 and quiet_s >= limit_s:
        return Stalled(quiet_s=quiet_s, cpu_s=cpu_s)
    return mark
