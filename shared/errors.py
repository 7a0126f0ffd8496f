"""The one error tree of crossfarm.

    CrossfarmError
    ├── InvalidRequest            the caller sent something to fix (HTTP 422)
    │   ├── UnsupportedTarget     a triple the farm has no toolchain for
    │   ├── UnknownToolchain      a toolchain no online worker offers
    │   ├── InvalidCargoArgs      a cargo flag the farm does not pass through
    │   ├── InvalidSource         a source tree that is unsafe or too big
    │   └── TooLarge              a request body over one of the farm's limits (HTTP 413)
    ├── NotFound                  an id or object that does not exist (HTTP 404)
    ├── Unauthenticated           no token, or one the farm does not accept (HTTP 401)
    ├── Forbidden                 a valid token whose role is too weak (HTTP 403)
    ├── QuotaExceeded             the tenant holds what its quota allows (HTTP 429)
    ├── Conflict                  the request clashes with the current state (HTTP 409)
    │   └── IllegalTransition     a build-state move the state machine forbids
    ├── StorageError              the object store failed; retrying may help (HTTP 503)
    ├── BrokerError               Redis (queues, events, flags) failed; retrying may help (503)
    ├── ControllerError           (worker) the controller could not be reached or refused a report
    ├── LeaseLost                 a worker cut off from the controller gave up its job
    ├── BuildError                a build step failed on a worker
    │   ├── BuildTimeout          the build ran past its time limit
    │   ├── BuildStalled          the build printed nothing and used no CPU for too long
    │   ├── BuildCancelled        the build was cancelled while it ran
    │   └── LimitExceeded         the build crossed a hard limit (disk, log, artifacts)
    ├── FarmError                 (CLI) the farm refused a request or could not be reached
    └── UsageError                (CLI) the command line or the crate on disk needs fixing

Each error carries the fields a caller acts on, not only prose.
"""

from __future__ import annotations

import re

#: How much of a caller's text an error echoes: enough to find it, never all of it.
EXCERPT_CHARS = 80


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """A caller's text made safe to echo: every character that does not print (control,
    format and bidi characters, lone surrogates) written as an escape, and cut short."""
    shown = "".join(map(_escaped, text[:limit]))
    return shown if len(text) <= limit else f"{shown}… ({len(text)} characters)"


def _escaped(char: str) -> str:
    # the backslash too, so an escape shown can never be text the caller sent
    if char == "\\":
        return "\\\\"
    return char if char.isprintable() else f"\\u{ord(char):04x}"


#: the user and password of any URL in a text, up to the host's '@'
_USERINFO = re.compile(r"(://)[^/\s]*@")


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by `***`."""
    return _USERINFO.sub(r"\1***@", text)


class CrossfarmError(Exception):
    """Base of every error crossfarm raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(CrossfarmError):
    """The caller sent something it has to fix before trying again."""


class UnsupportedTarget(InvalidRequest):
    """A target triple with no toolchain on this farm."""

    def __init__(self, target: str, supported: list[str]) -> None:
        super().__init__(
            f"target {target!r} is not supported; supported targets: {', '.join(supported)}"
        )
        self.target = target
        self.supported = supported


class UnknownToolchain(InvalidRequest):
    """A toolchain (rust-toolchain.toml, `+toolchain`) no online worker of the farm offers."""

    def __init__(self, toolchain: str, available: list[str]) -> None:
        super().__init__(
            f"toolchain {toolchain!r} is not on this farm; available: "
            f"{', '.join(available) or 'none (no worker online)'}. Pin one of them in "
            "rust-toolchain.toml or pass +TOOLCHAIN, or ask the operator to add a builder "
            "image for it (CROSSFARM_TOOLCHAINS)")
        self.toolchain = toolchain
        self.available = available


class InvalidCargoArgs(InvalidRequest):
    """A cargo argument the farm refuses to pass through."""

    def __init__(self, arg: str, reason: str) -> None:
        super().__init__(f"cargo argument {arg!r} is not allowed: {reason}")
        self.arg = arg


class InvalidSource(InvalidRequest):
    """A source tree or blob that is malformed, unsafe or over a limit."""

    def __init__(self, message: str, path: str | None = None) -> None:
        shown = None if path is None else excerpt(path)
        super().__init__(message if shown is None else f"{shown}: {message}")
        #: the path as it may be echoed (escaped, cut short), not necessarily as it was sent
        self.path = shown


class TooLarge(InvalidRequest):
    """A request body over one of the farm's limits: `limit` bytes, set by `setting`."""

    def __init__(self, what: str, limit: int, setting: str) -> None:
        super().__init__(f"{what} is over the farm's limit of {limit} bytes "
                         f"(the controller's {setting})")
        self.limit = limit
        self.setting = setting


class NotFound(CrossfarmError):
    """A build, job or object that does not exist."""


class Unauthenticated(CrossfarmError):
    """The request carries no token, or one that is wrong, expired or revoked."""


class Forbidden(CrossfarmError):
    """The token is valid, but its role does not allow the request."""

    def __init__(self, message: str, needed: str) -> None:
        super().__init__(message)
        self.needed = needed


class QuotaExceeded(CrossfarmError):
    """A tenant is at one of its quotas: `quota` names it (queued, source_bytes,
    artifact_bytes), with the limit and what the tenant holds; retrying after
    `retry_after_s` may succeed once jobs end or storage is freed."""

    def __init__(self, quota: str, limit: int, used: int, retry_after_s: int,
                 message: str) -> None:
        super().__init__(message)
        self.quota = quota
        self.limit = limit
        self.used = used
        self.retry_after_s = retry_after_s


class Conflict(CrossfarmError):
    """The request clashes with the current state of a build."""


class IllegalTransition(Conflict):
    """A move the build state machine does not allow."""

    def __init__(self, current: str, new: str) -> None:
        super().__init__(f"illegal build state transition {current} -> {new}")
        self.current = current
        self.new = new


class StorageError(CrossfarmError):
    """The object store failed; the operation may succeed when retried, unless what it
    holds is wrong (`retryable=False`: an object whose bytes do not match its name)."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class BrokerError(CrossfarmError):
    """Redis, which carries queues, log events and flags, failed; retrying may help."""


class ControllerError(CrossfarmError):
    """A worker's report did not reach the controller, or the controller refused it
    (`status_code`, None when it could not be reached); retrying may help."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class LeaseLost(CrossfarmError):
    """A worker could not renew its lease (reach the controller) for so long that the
    controller re-runs its job elsewhere: the worker stops the build and reports nothing."""


class BuildError(CrossfarmError):
    """A build step failed on a worker."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class BuildTimeout(BuildError):
    """The build ran past its time limit and was killed."""


class BuildStalled(BuildError):
    """A build step printed nothing and used next to no CPU time (`cpu_s` seconds) for
    `quiet_s` seconds, at least the worker's stall limit `limit_s`: it was stopped as hung
    (CROSSFARM_STALL_S; worker/stall.py)."""

    def __init__(self, quiet_s: float, cpu_s: float, limit_s: float) -> None:
        super().__init__(f"the build printed nothing and used {cpu_s:.2f} s of CPU time "
                         f"in {limit_s:g} s")
        self.quiet_s = quiet_s
        self.cpu_s = cpu_s
        self.limit_s = limit_s


class BuildCancelled(BuildError):
    """The build was cancelled while it ran."""


class LimitExceeded(BuildError):
    """The build crossed one of the worker's hard limits; the message starts with the
    limit's kind ("disk:", "log:", "artifacts:") and names the budget and its setting."""

    def __init__(self, kind: str, message: str, limit: int, setting: str) -> None:
        super().__init__(f"{kind}: {message} (the worker's {setting})")
        self.kind = kind
        self.limit = limit
        self.setting = setting


class FarmError(CrossfarmError):
    """The client's view of a failed call: the farm refused a request or could not be
    reached (client/api.py translates httpx's errors into it); the message says what to do."""


class UsageError(CrossfarmError):
    """The command line or the crate on disk is not something crossfarm can build yet:
    nothing was sent to the farm, and the message says what to change."""
