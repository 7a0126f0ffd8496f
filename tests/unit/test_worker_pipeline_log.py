from fakes import FakeEventSink

from crossfarm.shared.ids import BuildId
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


def test_values_shorter_than_four_characters_are_not_treated_as_secrets():
    log, _ = _log(["1", "on", "yes", ""])
    log("debug=1 colour=on verbose=yes")
    assert log.lines == ["debug=1 colour=on verbose=yes"]


def test_a_four_character_value_is_hidden():
    log, _ = _log(["s3cr"])
    log("key s3cr")
    assert log.lines == ["key ***"]
