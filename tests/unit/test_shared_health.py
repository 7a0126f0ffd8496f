"""The readiness probe runner: every check's answer named, a hung dependency failed by
the deadline, and never a second thread for a check still hanging."""

import threading

from crossfarm.shared.errors import BrokerError
from crossfarm.shared.health import Check, Readiness


def _ok():
    return True


def test_every_check_answering_is_ready():
    verdicts = Readiness([Check("database", _ok), Check("redis", _ok)]).verdicts()
    assert verdicts.ready
    assert verdicts.body() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}


def test_a_failing_check_is_named_with_what_it_said():
    def redis():
        raise BrokerError("redis: Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    verdicts = Readiness([Check("database", _ok), Check("redis", redis)]).verdicts()
    assert not verdicts.ready
    body = verdicts.body()
    assert body["status"] == 503
    assert body["type"] == "https://crossfarm.dev/problems/not-ready"
    assert body["failing"] == ["redis"]
    assert body["checks"] == {"database": "ok", "redis": "redis: Error 111 connecting to "
                                                         "127.0.0.1:6379. Connection refused."}
    assert "redis (redis: Error 111" in body["detail"]


def test_a_hung_check_fails_by_the_deadline_and_is_not_started_again_while_it_hangs():
    release = threading.Event()
    calls = []

    def hangs():
        calls.append(1)
        release.wait(60)

    runner = Readiness([Check("s3", hangs), Check("redis", _ok)], timeout_s=0.05)
    first = runner.verdicts()
    assert first.failing == ["s3"]
    assert first.checks["s3"] == "no answer within 0.05 s"
    assert first.checks["redis"] == "ok"
    second = runner.verdicts()
    assert second.checks["s3"] == "still waiting on the previous check's answer"
    assert len(calls) == 1
    release.set()
