"""The build state machine, for one target's job:

    (new) ──► queued ──► running ──► succeeded
      ▲  │        ├──────► failed
      │  │        ├──────► cancelled
      │  │        └──► queued   (its worker was lost: re-run under a new attempt)
      │  ├──────────────────► cancelled
      │  └──────────────────► failed     (e.g. it could not be enqueued)
    (new) ────────────────────► succeeded  (served from the result cache: no worker runs it)

`BORN` holds the states a job may be created in and `born()` refuses any other;
`TRANSITIONS` is the one table of allowed moves; `transition()` raises on any other.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from crossfarm.shared.errors import IllegalTransition


class BuildState(StrEnum):
    """Where one job (one target of a build) stands."""

    #: accepted and waiting in its architecture's queue
    QUEUED = "queued"
    #: a worker has started it
    RUNNING = "running"
    #: cargo succeeded and the artifacts and manifest are stored
    SUCCEEDED = "succeeded"
    #: cargo, the container or storage failed; the reason is recorded
    FAILED = "failed"
    #: the user cancelled it
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return not TRANSITIONS[self]


TRANSITIONS: dict[BuildState, frozenset[BuildState]] = {
    BuildState.QUEUED: frozenset({BuildState.RUNNING, BuildState.CANCELLED, BuildState.FAILED}),
    BuildState.RUNNING: frozenset(
        {BuildState.SUCCEEDED, BuildState.FAILED, BuildState.CANCELLED, BuildState.QUEUED}
    ),
    BuildState.SUCCEEDED: frozenset(),
    BuildState.FAILED: frozenset(),
    BuildState.CANCELLED: frozenset(),
}


#: The states a job is created in: queued, or succeeded when the result cache serves it
#: an earlier build's artifacts (a job born running or failed would skip its story).
BORN: frozenset[BuildState] = frozenset({BuildState.QUEUED, BuildState.SUCCEEDED})


def born(state: BuildState) -> BuildState:
    """Return `state` if a job may be created in it; raise IllegalTransition if not."""
    if state not in BORN:
        raise IllegalTransition("(new)", state.value)
    return state


def transition(current: BuildState, new: BuildState) -> BuildState:
    """Return `new` if the move from `current` is allowed; raise IllegalTransition if not."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(current.value, new.value)
    return new


def overall_state(states: Iterable[BuildState]) -> BuildState:
    """The state of a whole build from the states of its jobs."""
    seen = set(states)
    if not seen:
        raise ValueError("a build has at least one job")
    if BuildState.RUNNING in seen or (BuildState.QUEUED in seen and len(seen) > 1):
        return BuildState.RUNNING
    if seen == {BuildState.QUEUED}:
        return BuildState.QUEUED
    if BuildState.FAILED in seen:
        return BuildState.FAILED
    if BuildState.CANCELLED in seen:
        return BuildState.CANCELLED
    return BuildState.SUCCEEDED
