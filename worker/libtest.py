"""What a `cargo test` run says of its tests: libtest prints one summary line per test
binary (doc tests included),

    test result: FAILED. 2 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; …

and the job's counts are their sums. The lines are the crate's own output, so a test
could print a forged one: the counts tell the build's owner how the run went, they
decide nothing for the farm (the job's state comes from cargo's exit code)."""

from __future__ import annotations

import re

from crossfarm.shared.wire import TestCounts

_RESULT = re.compile(
    r"^test result: (?:ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored; "
    r"(\d+) measured; (\d+) filtered out")
#: a count past this is not libtest's (a forged or garbled line); it is left out
_MAX_COUNT = 10**9


class TestTally:
    """Sums the `test result:` lines of one run, fed line by line."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self._sums = [0, 0, 0, 0, 0]
        self.suites = 0

    def feed(self, line: str) -> bool:
        """Count one output line; True if it was a summary line."""
        match = _RESULT.match(line.strip())
        if match is None:
            return False
        numbers = [int(n) for n in match.groups()]
        if any(n > _MAX_COUNT for n in numbers):
            return False
        self._sums = [a + b for a, b in zip(self._sums, numbers, strict=True)]
        self.suites += 1
        return True

    def counts(self, ran: bool = True) -> TestCounts:
        passed, failed, ignored, measured, filtered = self._sums
        return TestCounts(passed=passed, failed=failed, ignored=ignored, measured=measured,
                          filtered_out=filtered, suites=self.suites, ran=ran)

    def summary(self) -> str:
        c = self.counts()
        return (f"{c.passed} passed, {c.failed} failed, {c.ignored} ignored"
                f" ({c.suites} test binar{'y' if c.suites == 1 else 'ies'})")
