import argparse
import os
import subprocess
import sys

import pytest

from crossfarm.client.build import follow
from crossfarm.client.cargo import cargo_options
from crossfarm.client.cli import _config, _logs, _parser, _submission, parse, parse_duration
from crossfarm.shared.errors import UsageError
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import API_VERSION, Command, Event, crossfarm_version

X86 = "x86_64-unknown-linux-gnu"


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


# --- global flags, on either side of the command ------------------------------------------

@pytest.mark.parametrize("command", [
    ["build"], ["test"], ["workers"], ["status", "b-1"], ["logs", "b-1"], ["list"],
    ["artifacts", "b-1"], ["drain", "w"], ["config"], ["git-credential", "list"],
    ["admin", "token", "list"],
], ids=lambda command: " ".join(command))
def test_global_flags_before_the_command_are_not_overwritten_by_its_defaults(command):
    args = parse(["--url", "http://other:8700", "--token", "t0k", "--json", *command])
    assert (args.url, args.token, args.json) == ("http://other:8700", "t0k", True)


@pytest.mark.parametrize("command", [
    ["build"], ["test"], ["workers"], ["status", "b-1"], ["admin", "token", "list"],
], ids=lambda command: " ".join(command))
def test_global_flags_after_the_command_count_too(command):
    args = parse([*command, "--url", "http://other:8700", "--token", "t0k", "--json"])
    assert (args.url, args.token, args.json) == ("http://other:8700", "t0k", True)


def test_without_global_flags_the_configuration_decides():
    args = parse(["workers"])
    assert (args.url, args.token, args.json) == (None, None, False)


def test_a_global_flag_given_on_both_sides_takes_the_later_one():
    assert parse(["--url", "http://a:1", "list", "--url", "http://b:2"]).url == "http://b:2"


def test_global_flags_reach_the_configuration_with_their_source(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("CROSSFARM_URL", "CROSSFARM_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    config = _config(parse(["--url", "http://other:8700", "--token", "t0k", "workers"]))
    assert (config.url, config.token) == ("http://other:8700", "t0k")
    assert config.sources["url"] == "flag --url"
    assert config.sources["token"] == "flag --token"


# --- +toolchain, --version ----------------------------------------------------------------

@pytest.mark.parametrize("command", ["build", "test"])
@pytest.mark.parametrize("toolchain", ["1.63", "1.63.0", "stable", "nightly-2026-01-01"])
def test_a_leading_plus_toolchain_is_read_as_cargo_reads_it(command, toolchain):
    args = parse([f"+{toolchain}", command, "--target", X86])
    assert args.toolchain == toolchain
    assert cargo_options(args, args.toolchain).toolchain == toolchain


def test_without_plus_toolchain_the_crate_or_the_farm_chooses():
    assert parse(["build"]).toolchain is None


@pytest.mark.parametrize("command", [["workers"], ["status"], ["admin", "token", "list"]])
def test_plus_toolchain_with_a_command_that_builds_nothing_is_a_usage_error(command):
    with pytest.raises(UsageError, match=r"\+1\.63 goes with build or test"):
        parse(["+1.63", *command])


@pytest.mark.parametrize("text", ["+", "+../x", "+a b", "+-x", "+" + "9" * 65, "+1.63/x"])
def test_a_plus_toolchain_that_cannot_name_a_toolchain_is_refused(text):
    with pytest.raises(UsageError, match=r"^\+TOOLCHAIN: '.*' is not a toolchain name \(a "
                                         "version such as 1.63"):
        parse([text, "build"])


def test_version_prints_the_cli_version_and_its_api(capsys):
    with pytest.raises(SystemExit) as exc:
        parse(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"crossfarm {crossfarm_version()} (API {API_VERSION})\n"


# --- cargo's flags --------------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "cargo_args"), [
    ([], []),
    (["-p", "app"], ["--package=app"]),
    (["--package", "app", "-p", "greet@0.1.0"], ["--package=app", "--package=greet@0.1.0"]),
    (["--workspace"], ["--workspace"]),
    (["--all"], ["--workspace"]),
    (["--workspace", "--exclude", "xtask"], ["--workspace", "--exclude=xtask"]),
    (["--lib"], ["--lib"]),
    (["--bin", "app"], ["--bin=app"]),
    (["--bins"], ["--bins"]),
    (["--example", "demo", "--example", "other"], ["--example=demo", "--example=other"]),
    (["--examples"], ["--examples"]),
    (["--test", "it"], ["--test=it"]),
    (["--tests"], ["--tests"]),
    (["--bench", "speed"], ["--bench=speed"]),
    (["--benches"], ["--benches"]),
    (["--all-targets"], ["--all-targets"]),
    (["-j", "2"], ["--jobs=2"]),
    (["--jobs", "default"], ["--jobs=default"]),
    (["-v"], ["-v"]),
    (["-vv"], ["-vv"]),
    (["-v", "--verbose"], ["-vv"]),
    (["-q"], ["--quiet"]),
    (["--locked"], ["--locked"]),
    (["--frozen"], ["--frozen"]),
    (["--offline"], ["--offline"]),
    (["--timings"], ["--timings"]),
    (["--locked", "--", "--keep-going"], ["--locked", "--keep-going"]),
], ids=lambda value: " ".join(value) if isinstance(value, list) else value)
@pytest.mark.parametrize("command", ["build", "test"])
def test_each_cargo_flag_becomes_the_cargo_argument_it_stands_for(command, flags, cargo_args):
    args = parse([command, *flags])
    assert cargo_options(args, None).cargo_args() == cargo_args


def test_features_and_the_profile_go_into_the_specs_own_fields():
    args = parse(["build", "-F", "a,b", "--features", "c d", "--all-features",
                  "--no-default-features"])
    spec = cargo_options(args, None).spec("release")
    assert spec.features == ["a", "b", "c", "d"]
    assert (spec.all_features, spec.no_default_features, spec.profile) == (True, True, "release")
    assert spec.cargo_args == []


@pytest.mark.parametrize(("flags", "profile"), [
    ([], "dev"), (["--release"], "release"), (["-r"], "release"),
    (["--profile", "bench"], "bench")])
def test_release_and_profile_choose_the_profile(monkeypatch, tmp_path, flags, profile):
    monkeypatch.chdir(_crate(tmp_path))
    monkeypatch.delenv("CROSSFARM_PROFILE", raising=False)
    args = parse(["build", "--target", X86, *flags])
    options, _root = _submission(_config(args), args)
    assert options.cargo.profile == profile


def test_release_and_profile_together_are_refused(capsys):
    with pytest.raises(SystemExit):
        parse(["build", "--release", "--profile", "bench"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_in_a_workspace_member_that_member_is_built_unless_packages_or_the_workspace_are_named(
        monkeypatch, tmp_path):
    root = tmp_path / "ws"
    (root / "app" / "src").mkdir(parents=True)
    (root / "Cargo.toml").write_text('[workspace]\nmembers = ["app"]\n')
    (root / "app" / "Cargo.toml").write_text('[package]\nname = "app"\nversion = "0.1.0"\n')
    monkeypatch.chdir(root / "app")

    def cargo_args(*flags):
        args = parse(["build", "--target", X86, *flags])
        options, sent = _submission(_config(args), args)
        assert sent == root
        return options.cargo.cargo_args

    assert cargo_args() == ["--package=app"]
    assert cargo_args("-p", "other") == ["--package=other"]
    assert cargo_args("--workspace") == ["--workspace"]


def test_exclude_without_workspace_is_refused_as_cargo_would():
    with pytest.raises(UsageError, match="--exclude goes with --workspace"):
        cargo_options(parse(["build", "--exclude", "xtask"]), None)


def test_verbose_and_quiet_together_are_refused(capsys):
    with pytest.raises(SystemExit):
        parse(["build", "-v", "-q"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_more_than_very_verbose_is_refused():
    with pytest.raises(UsageError, match="at most twice"):
        cargo_options(parse(["build", "-vvv"]), None)


@pytest.mark.parametrize("jobs", ["0", "-1", "many"])
def test_jobs_must_be_a_positive_number(capsys, jobs):
    with pytest.raises(SystemExit):
        parse(["build", "-j", jobs])
    assert "is not a positive number of jobs" in capsys.readouterr().err


def test_test_takes_no_run_and_the_placement():
    args = parse(["test", "--no-run", "--placement", "emulate-ok"])
    options = cargo_options(args, None)
    assert (options.no_run, args.placement) == (True, "emulate-ok")
    # --no-run is a field of the test request: the farm adds it for cargo itself
    assert options.cargo_args() == []


@pytest.mark.parametrize("flag", ["--no-run"])
def test_build_does_not_take_the_flags_of_test(capsys, flag):
    with pytest.raises(SystemExit):
        parse(["build", flag])
    assert "unrecognized arguments" in capsys.readouterr().err


def test_a_flag_is_never_guessed_from_its_first_letters(capsys):
    with pytest.raises(SystemExit):
        parse(["build", "--work"])  # cargo has no abbreviations either
    assert "unrecognized arguments: --work" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "command", "no_run"), [
    (["build"], Command.BUILD, False), (["test"], Command.TEST, False),
    (["test", "--no-run"], Command.TEST, True)])
def test_the_spec_carries_the_command_no_run_and_the_toolchain(argv, command, no_run):
    args = parse(["+1.63", *argv])
    spec = cargo_options(args, args.toolchain).spec("dev")
    assert (spec.command, spec.no_run, spec.toolchain) == (command, no_run, "1.63")
    assert "--no-run" not in spec.cargo_args  # the worker adds it, once


def test_the_crates_toolchain_file_chooses_the_toolchain_unless_plus_toolchain_does(
        monkeypatch, tmp_path):
    root = tmp_path / "ws"
    (root / "app").mkdir(parents=True)
    (root / "Cargo.toml").write_text('[workspace]\nmembers = ["app"]\n')
    (root / "app" / "Cargo.toml").write_text('[package]\nname = "app"\nversion = "0.1.0"\n')
    (root / "rust-toolchain.toml").write_text('[toolchain]\nchannel = "1.63"\n')
    monkeypatch.chdir(root / "app")

    def toolchain(*argv):
        args = parse([*argv, "test", "--target", X86])
        return _submission(_config(args), args)[0].cargo.toolchain

    assert toolchain() == "1.63"  # the workspace's file, found from the member
    assert toolchain("+1.96") == "1.96"


def test_a_git_build_leaves_the_toolchain_to_plus_toolchain_or_the_farm(monkeypatch,
                                                                         tmp_path):
    (tmp_path / "rust-toolchain").write_text("1.63\n")  # not the commit's: never read
    monkeypatch.chdir(tmp_path)
    args = parse(["build", "--target", X86, "--git", "https://git.example/a.git",
                  "--rev", "main"])
    assert _submission(_config(args), args)[0].cargo.toolchain is None


def _crate(tmp_path):
    (tmp_path / "Cargo.toml").write_text('[package]\nname = "one"\nversion = "0.1.0"\n')
    return tmp_path


# --- logs --------------------------------------------------------------------------------

class Stream:
    """A farm whose build b-1 has these events."""

    def __init__(self, *events):
        self._events = events

    def events(self, build_id, follow=True):
        assert build_id == "b-1"
        yield from self._events


ARM = "aarch64-unknown-linux-gnu"
BUILD_EVENTS = (
    Event(kind="state", target=X86, state=BuildState.RUNNING),
    Event(kind="log", target=X86, line="   Compiling hello v0.1.0"),
    Event(kind="log", target=ARM, line="   Compiling hello v0.1.0 (arm)"),
    Event(kind="log", target=X86, line="    Finished `dev` profile"),
    Event(kind="state", target=X86, state=BuildState.SUCCEEDED),
    Event(kind="end"),
)


def test_logs_writes_the_builds_output_to_stdout_and_its_state_changes_to_stderr(capsys):
    assert _logs(Stream(*BUILD_EVENTS), None, parse(["logs", "b-1"])) == 0
    out, err = capsys.readouterr()
    assert out == (f"[{X86}]    Compiling hello v0.1.0\n"
                   f"[{ARM}]    Compiling hello v0.1.0 (arm)\n"
                   f"[{X86}]     Finished `dev` profile\n")
    assert err == f"crossfarm: {X86}: running\ncrossfarm: {X86}: succeeded\n"


def test_logs_of_one_target_are_that_targets_output_as_it_was(capsys):
    _logs(Stream(*BUILD_EVENTS), None, parse(["logs", "b-1", "--target", X86]))
    assert capsys.readouterr().out == "   Compiling hello v0.1.0\n    Finished `dev` profile\n"


def test_a_build_follows_its_log_on_stderr_keeping_stdout_for_its_result(capsys):
    follow(Stream(*BUILD_EVENTS), "b-1", [X86, ARM])
    out, err = capsys.readouterr()
    assert out == ""
    assert f"[{X86} ]    Compiling hello v0.1.0\n" in err  # padded to the longest


def test_a_plus_toolchain_with_control_characters_is_echoed_escaped():
    with pytest.raises(UsageError) as exc:
        parse(["+1.63\x1b]0;owned\x07", "build"])
    assert "\x1b" not in str(exc.value)
    assert "\\u001b" in str(exc.value)

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


def test_the_crossfarm_command_skips_pydantics_plugin_search_and_the_async_libraries():
    # Both cost start-up time for nothing the CLI uses: pydantic's search reads every
    # installed distribution's entry points, and httpcore imports trio and anyio for
    # async clients. Checked as the `crossfarm` command starts, in a fresh interpreter.
    probe = ("import os, sys, httpx; from crossfarm.client.__main__ import main; "
             "sys.argv = ['crossfarm', 'config']; main(); httpx.Client(); "
             "print(os.environ['PYDANTIC_DISABLE_PLUGINS'], sorted("
             "m for m in ('trio', 'anyio') if sys.modules.get(m) is not None))")
    path = os.pathsep.join(entry for entry in sys.path if entry)
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True, env={**env, "PYTHONPATH": path})
    assert shown.stdout.strip().splitlines()[-1] == "__all__ []"
