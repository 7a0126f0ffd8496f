"""What the CLI checks with the farm before it sends anything: the API version, the
targets and the toolchain. Fake farms behind httpx's MockTransport."""

import json
from pathlib import Path

import httpx
import pytest

from crossfarm.client.api import FarmClient
from crossfarm.client.build import BuildOptions, run_build
from crossfarm.client.cargo import CargoOptions
from crossfarm.client.config import Config, CrossConfig
from crossfarm.client.preflight import check_offer, check_request, version_warning
from crossfarm.client.testrun import run_test
from crossfarm.shared.arch import Arch
from crossfarm.shared.errors import FarmError, UnknownToolchain, UnsupportedTarget, UsageError
from crossfarm.shared.wire import (
    API_VERSION,
    CargoSpec,
    FarmTargets,
    Health,
    TargetPlace,
    ToolchainTargets,
    crossfarm_version,
)

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
WASM = "wasm32-unknown-unknown"
URL = "http://farm:8700"
#: a controller older than /v1/targets names the targets it builds in its health
OLDER = Health(ok=True, targets=[X86, ARM])
CURRENT = Health(ok=True, version=crossfarm_version(), api=API_VERSION, targets=[X86, ARM])


def _place(target, arch, native):
    return TargetPlace(target=target, arch=arch, native=native, workers=1)


#: two toolchains online: 1.63 (with wasm32's std) and the default 1.96 (x86_64 only:
#: no arm64 worker is online)
FARM = FarmTargets(toolchains=[
    ToolchainTargets(name="1.63", releases=["1.63.0"], default=False,
                     targets=[_place(WASM, None, [Arch.AMD64]),
                              _place(X86, Arch.AMD64, [Arch.AMD64])]),
    ToolchainTargets(name="1.96", releases=["1.96.0"], default=True,
                     targets=[_place(X86, Arch.AMD64, [Arch.AMD64])]),
])


def test_a_farm_of_the_same_api_version_gets_no_warning():
    assert version_warning(Health(ok=True, version="0.9.0", api=API_VERSION), URL) is None


def test_a_farm_of_another_api_version_is_warned_about_with_both_versions():
    warning = version_warning(Health(ok=True, version="7.1.0", api=API_VERSION + 1), URL)
    assert warning is not None
    assert f"the farm at {URL} speaks API {API_VERSION + 1} (crossfarm 7.1.0)" in warning
    assert f"this CLI API {API_VERSION} (crossfarm {crossfarm_version()}" in warning
    assert "install the CLI of the farm's version" in warning


def test_a_farm_older_than_versions_is_warned_about():
    warning = version_warning(Health(ok=True), URL)
    assert warning is not None
    assert f"the farm at {URL} reports no API version" in warning


@pytest.mark.parametrize(("toolchain", "targets"), [
    ("1.63", [WASM, X86]), ("1.63.0", [X86]), (None, [X86]), ("stable", [X86]),
    # the default toolchain may wait for a worker of a table target's architecture
    (None, [ARM]),
])
def test_what_the_farm_offers_passes(toolchain, targets):
    check_offer(FARM, toolchain, targets)


@pytest.mark.parametrize("asked", ["1.6", "1.70", "nightly", "1.63.1"])
def test_an_unknown_toolchain_is_refused_with_the_available_ones(asked):
    with pytest.raises(UnknownToolchain) as refused:
        check_offer(FARM, asked, [X86])
    assert refused.value.toolchain == asked
    assert str(refused.value).startswith(
        f"toolchain '{asked}' is not on this farm; available: 1.63 (1.63.0), 1.96 (1.96.0)")


@pytest.mark.parametrize(("toolchain", "target", "supported"), [
    (None, WASM, [X86]), ("1.63", ARM, [WASM, X86]), ("1.96", WASM, [X86]),
    (None, "aarch64-unknown-linux-gun", [X86])])
def test_a_target_the_toolchain_does_not_build_is_refused_with_the_ones_it_does(
        toolchain, target, supported):
    with pytest.raises(UnsupportedTarget) as refused:
        check_offer(FARM, toolchain, [X86, target])
    assert (refused.value.target, refused.value.supported) == (target, supported)


def test_with_no_worker_online_the_controller_decides():
    check_offer(FarmTargets(toolchains=[]), None, [X86, "anything"])


def test_an_older_farm_is_checked_against_the_targets_of_its_health():
    check_request(None, OLDER, None, [X86, ARM])
    with pytest.raises(UnsupportedTarget, match=f"supported targets: {ARM}, {X86}$"):
        check_request(None, OLDER, None, [X86, "aarch64-unknown-linux-gun"])


def test_a_toolchain_asked_of_an_older_farm_is_refused_saying_what_to_do():
    check_request(None, OLDER, "stable", [X86])
    with pytest.raises(UsageError, match=r"\+1\.63: this farm's controller is older than "
                                         "toolchain selection"):
        check_request(None, OLDER, "1.63", [X86])


def test_the_offer_is_read_from_the_farms_targets_document_ignoring_newer_fields():
    document = {"toolchains": [
        {"name": "1.63", "releases": ["1.63.0"], "default": False, "future": 1,
         "targets": [{"target": WASM, "arch": None, "workers": 1, "queue": "x"}]}]}
    offer = _client({"/v1/targets": (200, document)}).targets()
    assert offer == FarmTargets(toolchains=[ToolchainTargets(
        name="1.63", releases=["1.63.0"], default=False,
        targets=[TargetPlace(target=WASM, arch=None, workers=1)])])


def test_a_farm_without_a_targets_endpoint_has_no_offer():
    assert _client({"/v1/health": (200, {"ok": True, "targets": [X86]})}).targets() is None


@pytest.mark.parametrize("document", [{}, {"toolchains": {}}, {"toolchains": [{"name": "x"}]}])
def test_a_malformed_targets_document_is_a_farm_error(document):
    with pytest.raises(FarmError, match="the farm's /v1/targets is malformed"):
        _client({"/v1/targets": (200, document)}).targets()


def test_a_health_that_is_not_a_controllers_is_a_farm_error_naming_the_url():
    with pytest.raises(FarmError, match=r"http://farm:8700/v1/health did not answer as a"):
        _client({"/v1/health": (200, {"status": "ok"})}).health()


def test_the_health_is_asked_once_per_client():
    routes = {"/v1/health": (200, {"ok": True, "version": "1", "api": 1, "targets": [X86]})}
    seen = []
    client = _client(routes, seen)
    assert client.health() is client.health()
    assert seen == ["/v1/health"]


class UploadsNothing:
    """A farm offering FARM; anything past the preflight fails the test."""

    def __init__(self, offer=FARM, health=CURRENT):
        self._offer, self._health = offer, health

    def targets(self):
        return self._offer

    def health(self):
        return self._health

    def __getattr__(self, name):
        raise AssertionError(f"called the farm's {name} before the targets were checked")


@pytest.mark.parametrize("farm", [UploadsNothing(), UploadsNothing(None, OLDER)],
                         ids=["targets", "older"])
@pytest.mark.parametrize("git", [None, ("https://git.example.com/a.git", "main")])
def test_a_mistyped_target_fails_before_anything_is_uploaded_or_fetched(tmp_path, git, farm):
    (tmp_path / "Cargo.toml").write_text('[package]\nname = "a"\nversion = "0.1.0"\n')
    options = BuildOptions(
        targets=[X86, "aarch64-unknown-linux-gun"], cargo=CargoSpec(), timeout=None,
        detach=False, as_json=False, cancel_on_interrupt=False, git=git, root=Path(tmp_path))
    config = Config(url=URL, token=None, targets=options.targets, profile=None, timeout=None,
                    user="ada@here")
    with pytest.raises(UnsupportedTarget, match="aarch64-unknown-linux-gun"):
        run_build(farm, config, CrossConfig(), options)


def test_a_bad_feature_name_is_a_usage_error_naming_the_field():
    with pytest.raises(UsageError, match=r"--features or --profile: features\.1"):
        CargoOptions(features=("ok,b@d",)).spec("dev")


@pytest.mark.parametrize("command", ["build", "test"])
def test_a_toolchain_the_farm_lacks_fails_before_anything_is_uploaded(tmp_path, command):
    options = BuildOptions(
        targets=[X86], cargo=CargoSpec(command=command, toolchain="1.70"), timeout=None,
        detach=False, as_json=False, cancel_on_interrupt=False, git=None, root=Path(tmp_path))
    config = Config(url=URL, token=None, targets=[X86], profile=None, timeout=None, user="a")
    run = run_test if command == "test" else run_build
    with pytest.raises(UnknownToolchain, match=r"toolchain '1\.70' is not on this farm"):
        run(UploadsNothing(), config, CrossConfig(), options)


def _client(routes, seen=None):
    def handler(request):
        if seen is not None:
            seen.append(request.url.path)
        status, body = routes.get(request.url.path, (404, {"detail": "Not Found"}))
        return httpx.Response(status, content=json.dumps(body))

    return FarmClient(URL, transport=httpx.MockTransport(handler))
