from crossfarm.worker.libtest import TestTally


def test_the_counts_are_the_sums_of_every_suites_result_line():
    tally = TestTally()
    for line in [
        "running 4 tests",
        "test result: FAILED. 2 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; "
        "finished in 0.01s",
        "test result: ok. 5 passed; 0 failed; 0 ignored; 2 measured; 3 filtered out; "
        "finished in 1.20s",
    ]:
        tally.feed(line)

    counts = tally.counts()
    assert (counts.passed, counts.failed, counts.ignored, counts.measured,
            counts.filtered_out, counts.suites) == (7, 1, 1, 2, 3, 2)
    assert tally.summary() == "7 passed, 1 failed, 1 ignored (2 test binaries)"


def test_a_line_that_only_looks_like_a_result_is_not_counted():
    tally = TestTally()
    assert not tally.feed("println: test result: ok. 1 passed")
    assert not tally.feed("test result: ok. 1 passed; 0 failed")  # cut short
    assert not tally.feed("test result: ok. 99999999999 passed; 0 failed; 0 ignored; "
                          "0 measured; 0 filtered out")
    assert tally.counts().suites == 0


def test_an_indented_result_line_counts_and_a_run_with_none_has_no_suites():
    tally = TestTally()
    assert tally.counts().passed == 0
    assert tally.counts().suites == 0
    assert tally.feed("   test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; "
                      "0 filtered out; finished in 0.00s")
    assert tally.counts(ran=False).ran is False
