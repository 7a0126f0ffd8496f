import pytest

from crossfarm.client.build import exit_code
from crossfarm.shared.states import BuildState


@pytest.mark.parametrize(
    ("state", "code"),
    [(BuildState.SUCCEEDED, 0), (BuildState.FAILED, 1), (BuildState.CANCELLED, 3)],
)
def test_each_final_state_has_its_exit_code(state, code):
    assert exit_code(state) == code


@pytest.mark.parametrize("state", [BuildState.QUEUED, BuildState.RUNNING])
def test_a_build_that_has_not_finished_never_exits_zero(state):
    assert exit_code(state) != 0
