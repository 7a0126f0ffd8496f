"""A job's log: every line redacted, forwarded live and kept for storage; the build's own
output held to the job's log budget.

Values passed to a build (`--env`, Cross.toml passthrough) are secrets. They are hidden
in the forms a log can carry them: verbatim, each line of a multi-line value (a PEM body
printed as it is), escaped as Rust's `{:?}`, JSON or Python's repr print them, and
where a cut line ends part-way into one. Not hidden: values shorter than 4 characters
(guessable in under a million tries, and hiding them would blank every "1" or "on" in
the log; the log says how many there are), encodings of a value (base64, hex, URL),
and a value the build splits or reshapes itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from crossfarm.shared.errors import LimitExceeded
from crossfarm.shared.ids import BuildId
from crossfarm.worker.container import LINE_CUT
from crossfarm.worker.reporter import EventSink

#: Values (and forms of them) shorter than this are not treated as secrets.
MIN_SECRET = 4
#: The default budget of a build's output in one job's log.
DEFAULT_MAX_BYTES = 32 * 1024**2
_HIDDEN = "***"
_CUT = LINE_CUT.split("{", 1)[0]


class JobLog:
    """Forwards each line to the build's event stream and keeps the whole log for storage.

    The worker's own lines are logged by calling it; the build's output goes through
    output(), which counts it against `max_bytes`: past that, the log says so once,
    drops the rest, and check() raises LimitExceeded so the build is stopped."""

    def __init__(self, sink: EventSink, build_id: BuildId, target: str,
                 secrets: list[str], max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._sink, self._build_id, self._target = sink, build_id, target
        self._redact = Redactor(secrets)
        self._max_bytes, self._used = max_bytes, 0
        #: the build's output passed the budget; the rest of it is dropped
        self.full = False
        self.lines: list[str] = []
        if self._redact.too_short:
            self(f"crossfarm: {self._redact.too_short} value(s) passed to the build are "
                 f"shorter than {MIN_SECRET} characters and are not redacted from this log")

    def __call__(self, text: str) -> None:
        self._keep(self._redact(text))

    def output(self, text: str) -> None:
        """One line the build printed."""
        if self.full:
            return
        text = self._redact(text)
        self._used += len(text.encode("utf-8", "replace")) + 1
        if self._used > self._max_bytes:
            self.full = True
            self(f"crossfarm: log: the build's output passed the job's log budget of "
                 f"{self._max_bytes} bytes; the rest of it is dropped and the build stopped")
            return
        self._keep(text)

    def check(self) -> None:
        """Raise LimitExceeded once the build's output has passed the budget."""
        if self.full:
            raise LimitExceeded("log", f"the build's output passed the job's log budget of "
                                f"{self._max_bytes} bytes", self._max_bytes,
                                "CROSSFARM_LOG_MAX_BYTES")

    def _keep(self, text: str) -> None:
        self.lines.append(text)
        self._sink.line(self._build_id, self._target, text)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Log how long a step took, so a slow build shows where its time went."""
        started = time.monotonic()
        yield
        self(f"crossfarm: {step} took {time.monotonic() - started:.2f} s")


class Redactor:
    """Replaces every form of every secret in a line by ***."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = list(secrets)
        forms = {form for value in values for form in _forms(value) if len(form) >= MIN_SECRET}
        # Longest first, so a form containing another is hidden whole.
        self._forms = sorted(forms, key=len, reverse=True)
        self.too_short = sum(1 for value in values if 0 < len(value) < MIN_SECRET)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, _HIDDEN)
        if self._forms and _CUT in text:
            text = self._cut_tail(text)
        return text

    def _cut_tail(self, text: str) -> str:
        """A line cut part-way into a secret ends with the secret's start: hide it."""
        body, marker, rest = text.rpartition(_CUT)
        longest = max((_overlap(body, form) for form in self._forms), default=0)
        if longest >= MIN_SECRET:
            body = body[:-longest] + _HIDDEN
        return body + marker + rest


def _overlap(body: str, form: str) -> int:
    """The length of the longest start of `form` (shorter than it) that ends `body`."""
    tail = body[-(len(form) - 1):] if len(form) > 1 else ""
    at = tail.find(form[0])
    while at >= 0:
        if form.startswith(tail[at:]):
            return len(tail) - at
        at = tail.find(form[0], at + 1)
    return 0


def _forms(value: str) -> Iterator[str]:
    """The forms one value may take in a log line."""
    for form in (value, _rust_debug(value)):
        yield form
        escaped = json.dumps(form)[1:-1]
        yield escaped
        yield escaped.replace("/", "\\/")
        yield json.dumps(form, ensure_ascii=False)[1:-1]
    yield repr(value)[1:-1]
    for line in value.splitlines():
        yield line.strip()


def _rust_debug(value: str) -> str:
    """The inside of Rust's `{:?}` of a string, for the characters that matter here."""
    out = []
    for char in value:
        if char in "\\\"":
            out.append("\\" + char)
        elif char in _RUST_ESCAPES:
            out.append(_RUST_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{{{ord(char):x}}}")
        else:
            out.append(char)
    return "".join(out)


_RUST_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}
