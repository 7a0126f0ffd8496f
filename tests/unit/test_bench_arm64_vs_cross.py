"""The aarch64 bench's verdicts on its own figures (bench/arm64_vs_cross.py): a job that
ran in another mode, failed, or reported other test counts is no figure of that mode."""

import math
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crossfarm.shared.arch import Arch, BuildMode
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import JobView, TestCounts

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import arm64_vs_cross as bench

ARM = "aarch64-unknown-linux-gnu"


def _job(mode=BuildMode.NATIVE, state=BuildState.SUCCEEDED, tests=None, reason=None):
    at = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
    return JobView(job_id="j-0123456789abcdef", target=ARM, arch=Arch.ARM64,
                   queue=QueueKey(Arch.ARM64, mode), state=state, attempt=1, mode=mode,
                   queued_at=at, started_at=at, finished_at=at + timedelta(seconds=42),
                   tests=tests, reason=reason)


def test_a_succeeded_build_in_the_mode_asked_is_a_figure():
    assert bench.problems(_job(), BuildMode.NATIVE, None) == []


def test_a_build_placed_in_another_mode_is_no_figure_of_the_mode_asked():
    assert bench.problems(_job(BuildMode.CROSS), BuildMode.EMULATED, None) == [
        "ran cross, not emulated"]


def test_a_failed_build_is_no_figure_and_says_why():
    job = _job(state=BuildState.FAILED, reason="cargo build failed with exit code 101")
    assert bench.problems(job, BuildMode.NATIVE, None) == [
        "failed: cargo build failed with exit code 101"]


def test_a_test_run_with_the_expected_counts_is_a_figure_though_a_test_failed_on_purpose():
    job = _job(state=BuildState.FAILED, tests=TestCounts(passed=3, failed=1, ignored=1))
    assert bench.problems(job, BuildMode.NATIVE, bench.TESTED_COUNTS) == []


def test_a_test_run_with_other_counts_or_none_is_no_figure():
    other = _job(tests=TestCounts(passed=4, failed=0, ignored=1))
    assert bench.problems(other, BuildMode.NATIVE, (3, 1, 1)) == [
        "tests 4 passed, 0 failed, 1 ignored; expected 3, 1, 1"]
    not_run = _job(tests=TestCounts(ran=False))
    assert bench.problems(not_run, BuildMode.NATIVE, (3, 1, 1)) == [
        "no test counts (succeeded: no reason given)"]


def test_a_ratio_is_a_factor_or_a_dash_when_either_side_is_no_figure():
    assert bench.ratio(61.0, 10.0) == "6.1x"
    assert bench.ratio(math.nan, 10.0) == "-"
    assert bench.ratio(10.0, math.nan) == "-"
    assert bench.ratio(10.0, 0.0) == "-"


def test_the_time_on_the_worker_is_from_its_start_to_its_end():
    assert bench.Timed(50.0, _job()).on_worker_s == 42.0


def test_the_table_shows_no_seconds_or_ratio_for_a_job_that_was_no_figure():
    runs = {BuildMode.CROSS: bench.Timed(10.0, _job(BuildMode.CROSS)),
            BuildMode.NATIVE: bench.Timed(61.0, _job()),
            BuildMode.EMULATED: bench.Timed(55.0, _job(BuildMode.EMULATED))}
    header, row = bench.build_table("dev", {"hello-c": 2.0}, {"hello-c": runs},
                                    {("hello-c", "emulated")})
    assert header.split()[:5] == ["crate", "(dev)", "host", "x86_64", "cross"]
    assert row.split() == ["hello-c", "2.0", "10.0", "61.0", "-", "0.2x", "6.1x", "-"]
