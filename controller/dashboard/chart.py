"""The fleet page's charts: per architecture, the median queue wait and build time of
each hour of the last day, as bar geometry a template draws as inline SVG (no script,
no chart library, nothing fetched).

A job counts for its queue wait in the hour it started (started_at - queued_at) and for
its build time in the hour it finished (finished_at - started_at). Bars are scaled to the
series' own peak, which the chart prints beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from crossfarm.controller.store.jobs import JobTiming
from crossfarm.shared.arch import Arch

HOURS = 24
#: one bar's slot in the SVG's own units (the SVG scales to its box)
SLOT = 12
HEIGHT = 60
WIDTH = HOURS * SLOT


@dataclass(frozen=True)
class Bar:
    x: int
    y: float
    width: int
    height: float
    #: what a pointer over it shows: the hour, the median and how many jobs
    title: str


@dataclass(frozen=True)
class Series:
    name: str
    bars: list[Bar]
    #: the tallest bar's value, in seconds (0: no job in the window)
    peak_s: float
    jobs: int


@dataclass(frozen=True)
class ArchChart:
    arch: Arch
    wait: Series
    build: Series


def duration_text(seconds: float) -> str:
    """12 s, 3 min 04 s, 2 h 05 min: short enough for a bar's label."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _series(name: str, points: Iterable[tuple[datetime, float]], start: datetime) -> Series:
    """Bars of the median of the values falling in each hour after `start`."""
    buckets: dict[int, list[float]] = {}
    for at, value in points:
        hour = int((at - start) / timedelta(hours=1))
        if 0 <= hour < HOURS:
            buckets.setdefault(hour, []).append(value)
    medians = {hour: statistics.median(values) for hour, values in buckets.items()}
    peak = max(medians.values(), default=0.0)
    bars = []
    for hour, median in sorted(medians.items()):
        height = HEIGHT * median / peak if peak > 0 else 0.0
        # A bar of a near-zero median still shows that jobs ran in that hour.
        height = max(height, 1.0)
        begins = start + timedelta(hours=hour)
        count = len(buckets[hour])
        bars.append(Bar(
            x=hour * SLOT + 1, y=round(HEIGHT - height, 2), width=SLOT - 2,
            height=round(height, 2),
            title=f"{begins:%H:%M}-{begins + timedelta(hours=1):%H:%M} UTC: median "
                  f"{duration_text(median)} over {count} job{'s' if count != 1 else ''}"))
    return Series(name=name, bars=bars, peak_s=peak,
                  jobs=sum(len(values) for values in buckets.values()))


def charts(timings: Iterable[JobTiming], now: datetime) -> list[ArchChart]:
    """One chart per architecture (every one, so an idle one says so), over the
    `HOURS` whole hours up to and including the current one."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
    by_arch: dict[Arch, list[JobTiming]] = {arch: [] for arch in Arch}
    for timing in timings:
        by_arch.setdefault(timing.arch, []).append(timing)
    return [
        ArchChart(
            arch=arch,
            wait=_series("queue wait", ((t.started_at, (t.started_at - t.queued_at)
                                         .total_seconds()) for t in jobs), start),
            build=_series("build time", ((t.finished_at, (t.finished_at - t.started_at)
                                          .total_seconds())
                                         for t in jobs if t.finished_at is not None), start),
        )
        for arch, jobs in by_arch.items()
    ]
