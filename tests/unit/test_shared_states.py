from itertools import product

import pytest

from crossfarm.shared.errors import Conflict, IllegalTransition
from crossfarm.shared.states import (
    BORN,
    TRANSITIONS,
    BuildState,
    born,
    overall_state,
    transition,
)

Q, R, S, F, C = (
    BuildState.QUEUED,
    BuildState.RUNNING,
    BuildState.SUCCEEDED,
    BuildState.FAILED,
    BuildState.CANCELLED,
)

ALLOWED = sorted((a, b) for a, moves in TRANSITIONS.items() for b in moves)
REFUSED = sorted((a, b) for a, b in product(BuildState, BuildState) if b not in TRANSITIONS[a])


def test_the_table_is_the_state_machine_of_the_module_docstring():
    expected = {
        Q: {R, C, F},
        R: {S, F, C, Q},  # back to queued: its worker was lost, re-run as a new attempt
        S: set(),
        F: set(),
        C: set(),
    }
    assert expected == TRANSITIONS


def test_every_pair_of_states_is_either_allowed_or_refused():
    assert len(ALLOWED) + len(REFUSED) == len(BuildState) ** 2
    assert len(ALLOWED) == 7


@pytest.mark.parametrize(("current", "new"), ALLOWED, ids=lambda s: s.value)
def test_an_allowed_move_returns_the_new_state(current, new):
    assert transition(current, new) is new


@pytest.mark.parametrize(("current", "new"), REFUSED, ids=lambda s: s.value)
def test_a_move_outside_the_table_raises_illegal_transition(current, new):
    with pytest.raises(IllegalTransition) as exc:
        transition(current, new)
    assert exc.value.current == current.value
    assert exc.value.new == new.value
    assert f"{current.value} -> {new.value}" in str(exc.value)


def test_illegal_transition_is_a_conflict():
    with pytest.raises(Conflict):
        transition(S, R)


@pytest.mark.parametrize("state", [S, F, C])
def test_a_terminal_state_has_no_moves(state):
    assert state.terminal
    assert TRANSITIONS[state] == frozenset()
    for new in BuildState:
        with pytest.raises(IllegalTransition):
            transition(state, new)


@pytest.mark.parametrize("state", [Q, R])
def test_queued_and_running_are_not_terminal(state):
    assert not state.terminal


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([Q], Q),
        ([Q, Q, Q], Q),
        ([R], R),
        ([R, Q], R),
        ([R, S], R),
        ([R, F], R),
        ([Q, S], R),
        ([Q, F], R),
        ([Q, C], R),
        ([S], S),
        ([S, S], S),
        ([F], F),
        ([S, F], F),
        ([F, C], F),
        ([S, F, C], F),
        ([C], C),
        ([C, S], C),
    ],
    ids=lambda v: "+".join(s.value for s in v) if isinstance(v, list) else v.value,
)
def test_overall_state_of_a_build_follows_its_jobs(states, expected):
    assert overall_state(states) is expected


def test_overall_state_takes_any_iterable():
    assert overall_state(s for s in [S, S]) is S


def test_a_build_without_jobs_has_no_overall_state():
    with pytest.raises(ValueError, match="at least one job"):
        overall_state([])


def test_a_job_is_born_queued_or_succeeded_when_the_result_cache_serves_it():
    assert {Q, S} == BORN
    for state in BORN:
        assert born(state) is state


@pytest.mark.parametrize("state", [R, F, C], ids=lambda s: s.value)
def test_a_job_born_in_any_other_state_is_refused(state):
    with pytest.raises(IllegalTransition) as exc:
        born(state)
    assert (exc.value.current, exc.value.new) == ("(new)", state.value)
