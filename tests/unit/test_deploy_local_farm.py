"""The local farm launcher's tokens: open unless a client or operator token is given,
and then its workers get a worker token of their own."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "local"))
import farm as localfarm


def test_an_open_farm_sets_no_token_even_if_the_callers_environment_has_one(tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv("CROSSFARM_CLIENT_TOKEN", "someone-elses")
    env = localfarm.Farm(dir=tmp_path).env()
    assert not [name for name in env if name.endswith("TOKEN")]
    assert localfarm.Farm(dir=tmp_path).auth == {}


def test_an_operator_token_makes_the_farm_require_tokens_with_a_worker_token_made_for_it(
        tmp_path):
    farm = localfarm.Farm(dir=tmp_path, operator_token="op-secret-token")
    env = farm.env()
    assert env["CROSSFARM_OPERATOR_TOKEN"] == env["CROSSFARM_TOKEN"] == "op-secret-token"
    assert len(env["CROSSFARM_WORKER_TOKEN"]) >= 32
    assert env["CROSSFARM_WORKER_TOKEN"] != localfarm.Farm(
        dir=tmp_path, operator_token="op-secret-token").worker_token
    assert farm.auth == {"Authorization": "Bearer op-secret-token"}


def test_a_given_worker_token_is_kept(tmp_path):
    farm = localfarm.Farm(dir=tmp_path, client_token="cl-secret", worker_token="w-secret")
    assert farm.env()["CROSSFARM_WORKER_TOKEN"] == "w-secret"
    assert farm.env()["CROSSFARM_TOKEN"] == "cl-secret"
