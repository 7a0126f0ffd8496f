import argparse
import os
import subprocess
import sys

import pytest

from crossfarm.client.cli import _parser, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("1s", 1), ("5m", 300), ("1h", 3600), ("24h", 86400)],
)
def test_a_duration_is_read_in_seconds_minutes_or_hours(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-5", "5x", "", "m", "1.5h", "5 m", "1h30m", "5M"])
def test_anything_else_is_refused_with_an_example_of_what_works(text):
    with pytest.raises(argparse.ArgumentTypeError, match="like 90s, 5m or 1h") as exc:
        parse_duration(text)
    assert repr(text) in str(exc.value)


def test_build_takes_a_placement_and_a_wait_limit():
    args = _parser().parse_args(["build", "--placement", "cross-ok", "--wait-limit", "5m"])
    assert (args.placement, args.wait_limit) == ("cross-ok", 300)


def test_build_leaves_the_placement_and_wait_limit_to_the_farm_by_default():
    args = _parser().parse_args(["build"])
    assert (args.placement, args.wait_limit) == (None, None)


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [(["--placement", "anywhere"], "invalid choice"), (["--wait-limit", "soon"], "5m or 1h")],
)
def test_build_refuses_an_unknown_placement_or_a_bad_wait_limit(capsys, flags, complaint):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["build", *flags])
    assert exc.value.code == 2
    assert complaint in capsys.readouterr().err


def test_admin_token_create_takes_a_tenant_role_expiry_and_name():
    args = _parser().parse_args(["admin", "token", "create", "--tenant", "acme", "--role",
                                 "read", "--expires", "90d", "--name", "ci"])
    assert (args.token_command, args.tenant, args.role, args.expires, args.name) == (
        "create", "acme", "read", "90d", "ci")


def test_admin_token_create_submits_by_default_and_needs_a_tenant(capsys):
    assert _parser().parse_args(["admin", "token", "create", "--tenant", "a"]).role == "submit"
    with pytest.raises(SystemExit):
        _parser().parse_args(["admin", "token", "create"])
    assert "--tenant" in capsys.readouterr().err


def test_admin_token_revoke_takes_a_numeric_id():
    assert _parser().parse_args(["admin", "token", "revoke", "7"]).token_id == 7
    with pytest.raises(SystemExit):
        _parser().parse_args(["admin", "token", "revoke", "seven"])


def test_build_uses_the_result_cache_unless_told_no_cache():
    assert _parser().parse_args(["build"]).cache is True
    assert _parser().parse_args(["build", "--no-cache"]).cache is False



def test_the_cli_starts_without_loading_httpxs_own_command_line_or_its_extras():
    # httpx imports its command line (click, rich, pygments) whenever they are installed:
    # most of the CLI's start-up, for code it never runs. Checked in a fresh interpreter
    # (on this one's import path, so the same checkout), as this one's modules depend on
    # what other tests imported.
    probe = ("import sys, crossfarm.client.cli; "
             "print(sorted(m for m in ('httpx._main', 'click', 'rich', 'pygments') "
             "if sys.modules.get(m) is not None))")
    path = os.pathsep.join(entry for entry in sys.path if entry)
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONPATH": path})
    assert shown.stdout.strip() == "[]"
