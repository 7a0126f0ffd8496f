import pytest

from crossfarm.shared.wire import JobMessage
from crossfarm.worker.cargo import LOCK_COMMAND, build_command, linker_variable

ARM = "aarch64-unknown-linux-gnu"


def _job(**cargo):
    return JobMessage.model_validate(
        {
            "job_id": "j-0123456789abcdef",
            "build_id": "b-0123456789abcdef",
            "target": ARM,
            "attempt": 1,
            "source": "0123456789abcdef" * 4,
            "cargo": {
                "profile": "release",
                "features": [],
                "all_features": False,
                "no_default_features": False,
                "cargo_args": [],
                **cargo,
            },
            "timeout_s": 600,
        }
    )


def _value_after(command, flag):
    return command[command.index(flag) + 1]


def test_a_lock_file_is_made_by_resolving_only():
    assert LOCK_COMMAND == ["cargo", "generate-lockfile"]


def test_build_runs_offline_for_the_target_and_profile():
    command = build_command(_job(), locked=False, jobs=6)
    assert command[:2] == ["cargo", "build"]
    assert "--offline" in command
    assert _value_after(command, "--target") == ARM
    assert _value_after(command, "--profile") == "release"
    assert _value_after(command, "--jobs") == "6"
    assert "--message-format=json-render-diagnostics" in command


@pytest.mark.parametrize("locked", [True, False])
def test_build_is_locked_only_when_asked(locked):
    assert ("--locked" in build_command(_job(), locked=locked, jobs=1)) is locked


def test_features_are_joined_into_one_argument():
    command = build_command(_job(features=["tls", "serde/derive"]), locked=False, jobs=1)
    assert _value_after(command, "--features") == "tls,serde/derive"
    assert command.count("--features") == 1


def test_no_features_means_no_features_flag():
    command = build_command(_job(), locked=False, jobs=1)
    assert "--features" not in command
    assert "--all-features" not in command
    assert "--no-default-features" not in command


def test_feature_switches_are_passed():
    command = build_command(_job(all_features=True, no_default_features=True), False, 1)
    assert "--all-features" in command
    assert "--no-default-features" in command


def test_extra_cargo_args_come_last_in_order():
    job = _job(features=["tls"], all_features=True, cargo_args=["--bin", "app", "-v"])
    command = build_command(job, locked=True, jobs=2)
    assert command[-3:] == ["--bin", "app", "-v"]
    assert command.count("--bin") == 1


# cargo refuses `--locked --locked` ("cannot be used multiple times"), and so for
# --offline and --jobs: the build's own flag stands in for the farm's.
@pytest.mark.parametrize(("asked", "farms"), [
    (["--locked"], "--locked"), (["--offline"], "--offline"), (["--jobs=1"], "--jobs"),
    (["--jobs", "1"], "--jobs"), (["-j1"], "--jobs"), (["-j", "1"], "--jobs")])
def test_a_flag_the_build_gives_itself_is_not_given_twice(asked, farms):
    command = build_command(_job(cargo_args=asked), locked=True, jobs=6)
    assert command.count(farms) == asked.count(farms)
    assert command[-len(asked):] == asked


def test_the_build_stays_offline_whatever_it_asks():
    for asked in ([], ["--offline"], ["--frozen"], ["--locked"]):
        command = build_command(_job(cargo_args=asked), locked=False, jobs=2)
        assert "--offline" in command


def test_frozen_goes_with_the_farms_locked_and_offline_as_cargo_allows():
    command = build_command(_job(cargo_args=["--frozen"]), locked=True, jobs=2)
    assert {"--offline", "--locked", "--frozen"} <= set(command)


@pytest.mark.parametrize(("no_run", "run_tests", "mode"), [
    (False, True, "--no-fail-fast"), (True, True, "--no-run"), (False, False, "--no-run")])
def test_a_test_job_runs_cargo_test_with_the_farms_run_mode_and_its_own_flags_once(
        no_run, run_tests, mode):
    asked = ["--package=app", "--locked", "-j2", "--timings"]
    job = _job(command="test", no_run=no_run, cargo_args=asked)
    command = build_command(job, locked=True, jobs=6, run_tests=run_tests)
    assert command[:2] == ["cargo", "test"]
    assert command[-len(asked):] == asked
    for flag in ("--locked", "--offline", mode):
        assert command.count(flag) == 1
    assert "--jobs" not in command  # -j2 is the job's own
    other = ({"--no-run", "--no-fail-fast"} - {mode}).pop()
    assert other not in command


def test_the_linker_variable_is_cargos_name_for_the_target():
    assert linker_variable("aarch64-unknown-linux-gnu") == (
        "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER")
    assert linker_variable("thumbv7em-none-eabihf") == (
        "CARGO_TARGET_THUMBV7EM_NONE_EABIHF_LINKER")
