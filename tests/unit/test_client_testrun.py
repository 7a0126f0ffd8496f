import io
from datetime import UTC, datetime

from crossfarm.client.testrun import print_summary, summary_line
from crossfarm.shared.arch import Arch, BuildMode
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import BuildView, CargoSpec, JobView, TestCounts

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"


def _job(target, state, tests=None, mode=BuildMode.NATIVE, reason=None, rustc=None):
    arch = Arch.AMD64 if target == X86 else Arch.ARM64
    return JobView(job_id="j-0123456789abcdef", target=target, arch=arch,
                   queue=QueueKey(arch, mode), state=state, attempt=1, mode=mode,
                   queued_at=datetime.now(UTC), tests=tests, reason=reason, rustc=rustc)


def test_a_target_whose_tests_ran_shows_its_counts():
    job = _job(X86, BuildState.FAILED, TestCounts(passed=3, failed=1, ignored=1, suites=2))
    assert summary_line(job) == f"{X86}: 3 passed, 1 failed, 1 ignored (2 test binaries)"


def test_filtered_out_tests_are_shown_when_there_are_some():
    job = _job(X86, BuildState.SUCCEEDED, TestCounts(passed=1, filtered_out=4, suites=1))
    assert summary_line(job) == (f"{X86}: 1 passed, 0 failed, 0 ignored, 4 filtered out "
                                 "(1 test binary)")


def test_tests_that_were_built_and_not_run_say_so_with_the_mode():
    job = _job(ARM, BuildState.SUCCEEDED, TestCounts(ran=False), mode=BuildMode.CROSS)
    assert summary_line(job) == f"{ARM}: tests built, not run (cross)"


def test_a_target_that_never_ran_its_tests_says_why():
    job = _job(X86, BuildState.FAILED, reason="cargo test failed with exit code 101")
    assert summary_line(job) == f"{X86}: failed: cargo test failed with exit code 101"


def test_the_summary_names_each_target_and_the_compiler_that_built_it():
    view = BuildView(build_id="b-0123456789abcdef", state=BuildState.FAILED,
                     created_at=datetime.now(UTC), source="0" * 64,
                     cargo=CargoSpec(command="test"),
                     jobs=[_job(X86, BuildState.FAILED, TestCounts(passed=1, failed=1, suites=1),
                                rustc="rustc 1.96.0 (ac68faa20 2026-05-25)\nrelease: 1.96.0")])
    out = io.StringIO()
    print_summary(view, out)
    assert out.getvalue().splitlines() == [
        "test results:",
        f"  {X86}: 1 passed, 1 failed, 0 ignored (1 test binary)",
        f"  {X86}: built by rustc 1.96.0 (ac68faa20 2026-05-25)",
    ]
