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
from crossfarm.client.preflight import Offer, Toolchain, check_request, version_warning
from crossfarm.shared.errors import FarmError, UnsupportedTarget, UsageError
from crossfarm.shared.wire import API_VERSION, CargoSpec, Health, crossfarm_version

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
WASM = "wasm32-unknown-unknown"
URL = "http://farm:8700"

FARM = Offer(targets=frozenset({X86, ARM, WASM}), toolchains=(
    Toolchain("1.96", ("1.96.0",), frozenset({X86, ARM})),
    Toolchain("1.63", ("1.63.0",), frozenset({X86, ARM, WASM})),
))


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


def test_a_target_the_farm_offers_passes():
    check_request(FARM, [X86, ARM], None)
    check_request(Offer(targets=frozenset({X86})), [X86], None)


def test_a_mistyped_target_is_refused_with_every_target_the_farm_offers():
    with pytest.raises(UnsupportedTarget) as exc:
        check_request(FARM, [X86, "aarch64-unknown-linux-gun"], None)
    assert exc.value.target == "aarch64-unknown-linux-gun"
    assert f"supported targets: {ARM}, {WASM}, {X86}" in str(exc.value)


@pytest.mark.parametrize("asked", ["1.63", "1.63.0"])
def test_a_toolchain_is_named_by_its_name_or_its_release(asked):
    check_request(FARM, [WASM], asked)


def test_a_toolchain_offers_only_its_own_targets():
    with pytest.raises(UnsupportedTarget, match=f"supported targets: {ARM}, {X86}$"):
        check_request(FARM, [WASM], "1.96")


@pytest.mark.parametrize("asked", ["1.6", "1.70", "nightly", "1.63.1"])
def test_an_unknown_toolchain_is_refused_with_the_available_ones(asked):
    with pytest.raises(UsageError) as exc:
        check_request(FARM, [X86], asked)
    assert str(exc.value) == (f"+{asked}: the farm has no such toolchain; available: "
                              "1.96 (1.96.0), 1.63 (1.63.0)")


def test_a_toolchain_asked_of_a_farm_without_toolchains_is_refused():
    with pytest.raises(UsageError, match="this farm names no toolchains"):
        check_request(Offer(targets=frozenset({X86})), [X86], "1.63")


def test_the_offer_is_read_from_the_farms_targets_document():
    document = {"toolchains": [
        {"name": "1.63", "releases": ["1.63.0"], "default": False, "future": 1,
         "targets": [{"target": WASM, "arch": None, "workers": 1},
                     {"target": X86, "arch": "amd64", "workers": 2}]}]}
    offer = _client({"/v1/targets": (200, document)}).offer()
    assert offer == Offer(targets=frozenset({WASM, X86}),
                          toolchains=(Toolchain("1.63", ("1.63.0",), frozenset({WASM, X86})),))


def test_a_farm_without_a_targets_endpoint_offers_the_targets_of_its_health():
    offer = _client({"/v1/health": (200, {"ok": True, "targets": [X86, ARM]})}).offer()
    assert offer == Offer(targets=frozenset({X86, ARM}))


@pytest.mark.parametrize("document", [{}, {"toolchains": {}}, {"toolchains": [{"name": "x"}]}])
def test_a_malformed_targets_document_is_a_farm_error(document):
    with pytest.raises(FarmError, match="the farm's /v1/targets is malformed"):
        _client({"/v1/targets": (200, document)}).offer()


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
    """A farm offering x86_64 only; anything past the preflight fails the test."""

    def offer(self):
        return Offer(targets=frozenset({X86}))

    def __getattr__(self, name):
        raise AssertionError(f"called the farm's {name} before the targets were checked")


@pytest.mark.parametrize("git", [None, ("https://git.example.com/a.git", "main")])
def test_a_mistyped_target_fails_before_anything_is_uploaded_or_fetched(tmp_path, git):
    (tmp_path / "Cargo.toml").write_text('[package]\nname = "a"\nversion = "0.1.0"\n')
    options = BuildOptions(
        targets=[X86, "aarch64-unknown-linux-gun"], cargo=CargoSpec(), timeout=None,
        detach=False, as_json=False, cancel_on_interrupt=False, git=git, root=Path(tmp_path))
    config = Config(url=URL, token=None, targets=options.targets, profile=None, timeout=None,
                    user="ada@here")
    with pytest.raises(UnsupportedTarget, match="aarch64-unknown-linux-gun"):
        run_build(UploadsNothing(), config, CrossConfig(), options)


def test_a_bad_feature_name_is_a_usage_error_naming_the_field():
    with pytest.raises(UsageError, match=r"--features or --profile: features\.1"):
        CargoOptions(features=("ok,b@d",)).spec("dev")


def test_a_toolchain_the_farm_lacks_fails_before_anything_is_uploaded(tmp_path):
    options = BuildOptions(
        targets=[X86], cargo=CargoSpec(), timeout=None, detach=False, as_json=False,
        cancel_on_interrupt=False, git=None, root=Path(tmp_path), toolchain="1.63")
    config = Config(url=URL, token=None, targets=[X86], profile=None, timeout=None, user="a")
    with pytest.raises(UsageError, match=r"\+1\.63: this farm names no toolchains"):
        run_build(UploadsNothing(), config, CrossConfig(), options)


def _client(routes, seen=None):
    def handler(request):
        if seen is not None:
            seen.append(request.url.path)
        status, body = routes.get(request.url.path, (404, {"detail": "Not Found"}))
        return httpx.Response(status, content=json.dumps(body))

    return FarmClient(URL, transport=httpx.MockTransport(handler))
