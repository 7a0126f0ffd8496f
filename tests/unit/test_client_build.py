from types import SimpleNamespace

import pytest

from crossfarm.client.build import _send_source, exit_code
from crossfarm.shared.errors import InvalidSource
from crossfarm.shared.states import BuildState
from crossfarm.shared.tree import TreeLimits


@pytest.mark.parametrize(
    ("state", "code"),
    [(BuildState.SUCCEEDED, 0), (BuildState.FAILED, 1), (BuildState.CANCELLED, 3)],
)
def test_each_final_state_has_its_exit_code(state, code):
    assert exit_code(state) == code


@pytest.mark.parametrize("state", [BuildState.QUEUED, BuildState.RUNNING])
def test_a_build_that_has_not_finished_never_exits_zero(state):
    assert exit_code(state) != 0


class SmallFarm:
    """A farm whose files may be 99 bytes at most; it must not be sent anything."""

    def limits(self):
        return TreeLimits(max_file_bytes=99)

    def missing_blobs(self, digests):
        raise AssertionError("asked the farm about blobs of a tree over its limits")


def test_the_farms_own_limits_are_checked_before_anything_is_sent(tmp_path):
    (tmp_path / "Cargo.toml").write_text('[package]\nname = "big"\nversion = "0.1.0"\n')
    (tmp_path / "data.bin").write_bytes(b"\0" * 100)
    with pytest.raises(InvalidSource, match=r"data\.bin: 100 bytes; the limit is 99"):
        _send_source(SmallFarm(), SimpleNamespace(git=None, root=tmp_path))
