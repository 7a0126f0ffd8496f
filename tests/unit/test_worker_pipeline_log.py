import json

import pytest
from fakes import FakeEventSink

from crossfarm.shared.errors import LimitExceeded
from crossfarm.shared.ids import BuildId
from crossfarm.worker.container import LINE_CUT
from crossfarm.worker.pipeline import JobLog

BUILD = BuildId("b-0123456789abcdef")
X86 = "x86_64-unknown-linux-gnu"


def _log(secrets):
    sink = FakeEventSink()
    return JobLog(sink, BUILD, X86, secrets), sink


def test_a_line_is_forwarded_with_its_build_and_target_and_kept():
    log, sink = _log([])
    log("Compiling hello v0.1.0")
    assert sink.events == [(BUILD, X86, "Compiling hello v0.1.0")]
    assert log.lines == ["Compiling hello v0.1.0"]


def test_a_secret_is_hidden_before_the_line_is_forwarded_or_stored():
    log, sink = _log(["hunter2-token"])
    log("auth with hunter2-token failed; hunter2-token expired")
    expected = "auth with *** failed; *** expired"
    assert sink.events == [(BUILD, X86, expected)]
    assert log.lines == [expected]


def test_a_secret_that_contains_another_is_hidden_whole():
    log, sink = _log(["abcd", "abcd-efgh-ijkl"])
    log("token=abcd-efgh-ijkl short=abcd")
    assert log.lines == ["token=*** short=***"]
    assert sink.events[0][2] == "token=*** short=***"


def test_values_shorter_than_four_characters_are_not_hidden_and_the_log_says_so():
    log, _ = _log(["1", "on", "yes", ""])
    log("debug=1 colour=on verbose=yes")
    assert log.lines == [
        "crossfarm: 3 value(s) passed to the build are shorter than 4 characters and are "
        "not redacted from this log",
        "debug=1 colour=on verbose=yes",
    ]


def test_a_four_character_value_is_hidden():
    log, _ = _log(["s3cr"])
    log("key s3cr")
    assert log.lines == ["key ***"]


PEM = ("-----BEGIN PRIVATE KEY-----\n"
       "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
       "q1w2e3r4t5y6u7i8o9p0AsDfGhJkLzXcVbNm\n"
       "-----END PRIVATE KEY-----\n")


def test_each_line_of_a_multi_line_secret_printed_as_it_is_is_hidden():
    log, _ = _log([PEM])
    for line in PEM.splitlines():
        log(f"  {line}")
    assert log.lines == ["  ***"] * 4


@pytest.mark.parametrize("form", [
    # Rust's {:?}, and JSON (serde_json, python's json) of the value
    lambda v: '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"',
    json.dumps,
    lambda v: json.dumps(v).replace("/", "\\/"),
    repr,
])
def test_an_escaped_secret_is_hidden(form):
    secret = 'pa"ss\\word/42\nline-two'
    log, _ = _log([secret])
    log(f"env: {form(secret)}")
    assert log.lines[0] in ('env: "***"', "env: '***'")


def test_a_line_cut_part_way_into_a_secret_hides_the_part_it_shows():
    log, _ = _log(["hunter2-token"])
    marker = LINE_CUT.format(limit=20)
    log.output(f"xxxxxxxxxxxxxhunter2{marker}")
    assert log.lines == [f"xxxxxxxxxxxxx***{marker}"]


def test_the_build_output_past_the_log_budget_is_dropped_once_said_and_stops_the_build():
    log = JobLog(FakeEventSink(), BUILD, X86, [], max_bytes=10)
    log.output("12345")  # 6 bytes with its newline
    log.check()
    log.output("67890")  # 12: past the budget
    log.output("more")
    log("crossfarm: the worker's own lines are still logged")
    assert log.lines == [
        "12345",
        "crossfarm: log: the build's output passed the job's log budget of 10 bytes; the "
        "rest of it is dropped and the build stopped",
        "crossfarm: the worker's own lines are still logged",
    ]
    with pytest.raises(LimitExceeded, match=r"^log: the build's output passed the job's log "
                                            r"budget of 10 bytes") as refused:
        log.check()
    assert refused.value.setting == "CROSSFARM_LOG_MAX_BYTES"


def test_the_build_output_is_redacted_too():
    log, _ = _log(["hunter2-token"])
    log.output("token hunter2-token")
    assert log.lines == ["token ***"]
