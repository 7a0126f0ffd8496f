import inspect

import pytest
from pydantic import ValidationError

from crossfarm.shared import wire
from crossfarm.shared.arch import BuildMode, Placement
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import BuildRequest, CargoSpec, JobFinished, Wire

DIGEST = "0123456789abcdef" * 4
X86 = "x86_64-unknown-linux-gnu"


def _request(**fields):
    """A request; cargo options (profile=, features=, …) go into its cargo spec."""
    cargo = {name: fields.pop(name) for name in list(fields) if name in CargoSpec.model_fields}
    return BuildRequest.model_validate({"source": DIGEST, "targets": [X86], "cargo": cargo,
                                        **fields})


def _error_types(exc):
    return {error["type"] for error in exc.value.errors()}


def test_a_minimal_request_gets_the_defaults():
    request = _request()
    assert request.cargo.profile == "dev"
    assert request.cargo.features == []
    assert request.cargo.cargo_args == []
    assert request.cargo.all_features is False
    assert request.cargo.no_default_features is False
    assert request.timeout_s is None
    assert request.placement is None
    assert request.wait_limit_s is None


@pytest.mark.parametrize("placement", ["native", "cross-ok", "emulate-ok"])
def test_a_request_names_its_placement_as_the_cli_spells_it(placement):
    assert _request(placement=placement).placement is Placement(placement)


@pytest.mark.parametrize("placement", ["cross", "emulated", "NATIVE", "anywhere", ""])
def test_an_unknown_placement_is_refused(placement):
    with pytest.raises(ValidationError) as exc:
        _request(placement=placement)
    assert _error_types(exc) == {"enum"}


@pytest.mark.parametrize("wait_limit_s", [0, -1, 7 * 24 * 3600 + 1])
def test_a_wait_limit_outside_its_bounds_is_refused(wait_limit_s):
    with pytest.raises(ValidationError):
        _request(wait_limit_s=wait_limit_s)


@pytest.mark.parametrize("wait_limit_s", [1, 7 * 24 * 3600])
def test_a_wait_limit_at_its_bounds_is_accepted(wait_limit_s):
    assert _request(wait_limit_s=wait_limit_s).wait_limit_s == wait_limit_s


def test_each_placement_allows_its_modes_best_first():
    assert Placement.NATIVE.modes == (BuildMode.NATIVE,)
    assert Placement.CROSS_OK.modes == (BuildMode.NATIVE, BuildMode.CROSS)
    assert Placement.EMULATE_OK.modes == (BuildMode.NATIVE, BuildMode.CROSS, BuildMode.EMULATED)


def test_an_unknown_field_is_refused():
    with pytest.raises(ValidationError) as exc:
        _request(relase=True)
    assert _error_types(exc) == {"extra_forbidden"}
    assert exc.value.errors()[0]["loc"] == ("relase",)


def test_a_request_without_targets_is_refused():
    with pytest.raises(ValidationError) as exc:
        _request(targets=[])
    assert exc.value.errors()[0]["loc"] == ("targets",)


def test_an_empty_target_name_is_refused():
    with pytest.raises(ValidationError):
        _request(targets=[""])


def test_more_than_sixteen_targets_are_refused():
    with pytest.raises(ValidationError):
        _request(targets=[X86] * 17)


@pytest.mark.parametrize("profile", ["dev", "release", "my-profile_2", "a" * 64])
def test_a_well_formed_profile_name_is_accepted(profile):
    assert _request(profile=profile).cargo.profile == profile


@pytest.mark.parametrize(
    "profile", ["", "Release", "2fast", "-dev", "dev profile", "dev/../x", "a" * 65]
)
def test_a_bad_profile_name_is_refused(profile):
    with pytest.raises(ValidationError) as exc:
        _request(profile=profile)
    assert exc.value.errors()[0]["loc"] == ("cargo", "profile")


@pytest.mark.parametrize(
    "source",
    ["", DIGEST[:-1], DIGEST + "0", DIGEST.upper(), "z" * 64, DIGEST + "\n", "sha256:" + DIGEST],
)
def test_a_bad_source_digest_is_refused(source):
    with pytest.raises(ValidationError) as exc:
        _request(source=source)
    assert exc.value.errors()[0]["loc"] == ("source",)


@pytest.mark.parametrize("feature", ["", "-x", "a b", "a,b"])
def test_a_bad_feature_name_is_refused(feature):
    with pytest.raises(ValidationError):
        _request(features=[feature])


def test_dependency_features_are_accepted():
    assert _request(features=["serde/derive", "tls"]).cargo.features == ["serde/derive", "tls"]


@pytest.mark.parametrize("timeout_s", [9, 0, -1, 24 * 3600 + 1])
def test_a_timeout_outside_its_bounds_is_refused(timeout_s):
    with pytest.raises(ValidationError):
        _request(timeout_s=timeout_s)


@pytest.mark.parametrize("timeout_s", [10, 24 * 3600])
def test_a_timeout_at_its_bounds_is_accepted(timeout_s):
    assert _request(timeout_s=timeout_s).timeout_s == timeout_s


def test_a_request_is_frozen():
    request = _request()
    with pytest.raises(ValidationError) as exc:
        request.cargo.profile = "release"
    assert _error_types(exc) == {"frozen_instance"}
    assert request.cargo.profile == "dev"


def test_a_request_round_trips_through_json():
    request = _request(profile="release", features=["a"], cargo_args=["--locked"], timeout_s=60,
                       placement="emulate-ok", wait_limit_s=300)
    assert BuildRequest.model_validate_json(request.model_dump_json()) == request


WIRE_MODELS = [
    model
    for _, model in inspect.getmembers(wire, inspect.isclass)
    if issubclass(model, Wire) and model is not Wire
]


@pytest.mark.parametrize("model", WIRE_MODELS, ids=lambda m: m.__name__)
def test_every_wire_model_forbids_unknown_fields_and_is_frozen(model):
    # Replies to workers alone ignore fields a newer controller added.
    assert model.model_config["extra"] == ("ignore" if issubclass(model, wire.Reply)
                                           else "forbid")
    assert model.model_config["frozen"] is True


def test_a_worker_reads_a_reply_from_a_newer_controller_that_has_more_fields():
    reply = wire.HeartbeatReply.model_validate_json(
        '{"drain": true, "lost_after_s": 30, "added_in_a_later_version": [1]}')
    assert (reply.drain, reply.lost_after_s) == (True, 30)
    verdict = wire.StartVerdict.model_validate_json('{"proceed": false, "hint": "x"}')
    assert verdict.proceed is False


def test_only_what_the_controller_sends_workers_and_its_health_and_targets_are_lenient():
    # Health and the targets too: a CLI must read a newer controller's health to warn
    # about its version, and its /v1/targets to check a request before uploading it.
    assert {m.__name__ for m in WIRE_MODELS if issubclass(m, wire.Reply)} == {
        "Reply", "HeartbeatReply", "StartVerdict", "JobMessage", "FetchMessage", "Health",
        "FarmTargets", "ToolchainTargets", "TargetPlace"}


def test_a_cli_reads_the_health_of_a_newer_controller_and_of_one_older_than_versions():
    newer = wire.Health.model_validate_json(
        '{"ok": true, "version": "9.0.0", "api": 2, "targets": [], "queues": {}}')
    assert (newer.version, newer.api) == ("9.0.0", 2)
    older = wire.Health.model_validate_json('{"ok": true, "targets": ["x"]}')
    assert (older.version, older.api, older.targets) == (None, None, ["x"])


def test_a_worker_reads_a_job_from_a_newer_controller_and_one_from_an_older_one():
    job = {"job_id": "j-1", "build_id": "b-1", "target": "x86_64-unknown-linux-gnu",
           "attempt": 1, "source": "ab" * 32,
           "cargo": {"profile": "dev", "features": [], "all_features": False,
                     "no_default_features": False, "cargo_args": []},
           "timeout_s": 60}
    older = wire.JobMessage.model_validate(job)
    assert older.limits is None  # the worker then falls back to the default limits
    limits = {"max_files": 5, "max_file_bytes": 100, "max_total_bytes": 200}
    newer = wire.JobMessage.model_validate({**job, "limits": limits, "priority": 3})
    assert newer.limits == wire.SourceLimits(**limits)


def test_a_job_message_that_fails_validation_does_not_print_the_builds_variables():
    job = {"job_id": "j-1", "build_id": "b-1", "target": "x86_64-unknown-linux-gnu",
           "attempt": 1, "source": "ab" * 32, "cargo": {}, "timeout_s": 60,
           "env": {"TOKEN": ["hunter2-swordfish"]}}  # a list: not a valid value
    with pytest.raises(ValidationError) as refused:
        wire.JobMessage.model_validate(job)
    assert "hunter2-swordfish" not in str(refused.value)


def test_all_wire_models_were_found():
    assert {model.__name__ for model in WIRE_MODELS} >= {
        "BuildRequest",
        "BuildView",
        "JobView",
        "JobMessage",
        "JobStarted",
        "JobFinished",
        "Manifest",
        "ArtifactEntry",
        "ArtifactView",
        "Event",
        "SourceStatus",
        "FieldProblem",
        "StartVerdict",
        "TreeEntry",
        "SourceTree",
        "BlobQuery",
        "MissingBlobs",
        "GitSource",
        "WorkerHeartbeat",
        "WorkerView",
        "ArchSummary",
        "Fleet",
        "FarmStats",
    }


@pytest.mark.parametrize("state", [BuildState.QUEUED, BuildState.RUNNING])
def test_a_finished_report_must_carry_a_terminal_state(state):
    with pytest.raises(ValidationError):
        JobFinished(attempt=1, worker="w1", lease="s" * 43, state=state)


def test_a_finished_report_accepts_a_terminal_state_from_json():
    report = JobFinished.model_validate_json(
        '{"attempt": 2, "worker": "w1", "lease": "s", "state": "failed", "exit_code": 101}')
    assert report.state is BuildState.FAILED
    assert report.exit_code == 101


def test_a_request_carries_environment_variables_and_its_submitter():
    request = _request(
        env={"RUST_LOG": "debug"}, target_env={X86: {"CC": "clang"}}, submitter="ada"
    )
    assert request.env == {"RUST_LOG": "debug"}
    assert request.target_env == {X86: {"CC": "clang"}}
    assert request.submitter == "ada"


def test_a_minimal_request_has_no_environment_and_no_submitter():
    request = _request()
    assert (request.env, request.target_env, request.submitter) == ({}, {}, None)


@pytest.mark.parametrize("name", ["", "1ABC", "A-B", "A B", "A=B"])
def test_a_bad_environment_variable_name_is_refused(name):
    with pytest.raises(ValidationError):
        _request(env={name: "x"})
    with pytest.raises(ValidationError):
        _request(target_env={X86: {name: "x"}})


def test_more_than_sixty_four_environment_variables_are_refused():
    with pytest.raises(ValidationError):
        _request(env={f"V{i}": "x" for i in range(65)})


def test_a_cargo_spec_s_flags_follow_its_options_in_cargo_s_order():
    spec = CargoSpec(profile="release", features=["a", "b/c"], all_features=True,
                     no_default_features=True, cargo_args=["--locked"])
    assert spec.flags() == ["--features", "a,b/c", "--all-features", "--no-default-features",
                            "--locked"]
    assert CargoSpec().flags() == []


def _entry(name):
    return {"name": name, "size": 1, "sha256": DIGEST, "key": f"k/{name}"}


@pytest.mark.parametrize("name", [
    "../../x", "a/b", "..", ".", "", "a\\b", "x\x1b[2J", "evil\u202etxt", "nul\x00",
    "\udcff", "é" * 128,
], ids=["traversal", "slash", "dotdot", "dot", "empty", "backslash", "escape", "bidi", "nul",
        "surrogate", "over-255-bytes"])
def test_an_artifact_name_that_is_not_one_plain_file_name_is_refused(name):
    with pytest.raises(ValidationError):
        wire.ArtifactEntry.model_validate(_entry(name))


@pytest.mark.parametrize("name", ["hello", "libhello.so", "hello.exe", "a" * 255, "crème"])
def test_a_plain_artifact_name_is_accepted(name):
    assert wire.ArtifactEntry.model_validate(_entry(name)).name == name


@pytest.mark.parametrize("profile_dir", ["../..", "debug/../../x", ""])
def test_a_manifest_whose_profile_dir_is_not_a_plain_name_is_refused(profile_dir):
    with pytest.raises(ValidationError):
        wire.Manifest(build_id="b-1", job_id="j-1", target="t", attempt=1,
                      profile_dir=profile_dir, artifacts=[])


def test_an_artifact_with_a_negative_size_is_refused():
    with pytest.raises(ValidationError):
        wire.ArtifactEntry.model_validate({**_entry("a"), "size": -1})


def test_no_run_belongs_to_test_runs_only():
    from crossfarm.shared.wire import CargoSpec

    assert CargoSpec(command="test", no_run=True).no_run
    with pytest.raises(ValueError, match="no_run applies to command 'test' only"):
        CargoSpec(no_run=True)


def test_a_toolchain_name_is_a_version_or_a_plain_name_never_a_path():
    from crossfarm.shared.wire import CargoSpec

    assert CargoSpec(toolchain="1.63.0").toolchain == "1.63.0"
    for bad in ["../x", "/opt/rust", "", "1.63 --config"]:
        with pytest.raises(ValueError, match="should match pattern"):
            CargoSpec(toolchain=bad)


def test_an_announced_toolchain_answers_its_name_release_and_release_prefix():
    from crossfarm.shared.wire import toolchain_answers

    assert toolchain_answers("1.63", "old", "1.63.0")
    assert toolchain_answers("1.63.0", "old", "1.63.0")
    assert toolchain_answers("old", "old", "1.63.0")
    assert not toolchain_answers("1.6", "old", "1.63.0")
    assert not toolchain_answers("1.63.1", "old", "1.63.0")
