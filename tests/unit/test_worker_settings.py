import pytest
from pydantic import ValidationError

from crossfarm.shared.arch import Arch
from crossfarm.worker.settings import WorkerSettings

ARM64_IMAGE = "crossfarm/builder-arm64:1"


def test_a_worker_emulates_nothing_by_default():
    settings = WorkerSettings()
    assert (settings.emulate_arches, settings.emulation_images) == ([], {})
    assert settings.cross_arches == []


def test_an_emulated_architecture_with_its_builder_image_is_accepted():
    settings = WorkerSettings(emulate_arches=[Arch.ARM64], emulation_images={"arm64": ARM64_IMAGE})
    assert settings.emulate_arches == [Arch.ARM64]
    assert settings.emulation_images == {"arm64": ARM64_IMAGE}


def test_an_emulated_architecture_without_a_builder_image_is_refused_naming_both_settings():
    with pytest.raises(ValidationError) as exc:
        WorkerSettings(emulate_arches=[Arch.ARM64], emulation_images={"amd64": "x"})
    text = str(exc.value)
    assert "CROSSFARM_EMULATE_ARCHES" in text
    assert "CROSSFARM_EMULATION_IMAGES" in text
    assert "arm64" in text


def test_images_for_architectures_that_are_not_emulated_are_harmless():
    settings = WorkerSettings(emulation_images={"arm64": ARM64_IMAGE})
    assert settings.emulate_arches == []


@pytest.mark.parametrize(
    ("field", "text", "arches"),
    [
        ("cross_arches", "arm64,aarch64", [Arch.ARM64, Arch.ARM64]),
        ("cross_arches", "x86_64, arm64", [Arch.AMD64, Arch.ARM64]),
        ("cross_arches", "", []),
        ("cross_arches", "arm64,", [Arch.ARM64]),
        ("emulate_arches", "aarch64", [Arch.ARM64]),
    ],
)
def test_comma_separated_architecture_names_and_aliases_parse(field, text, arches):
    images = {"arm64": ARM64_IMAGE, "amd64": "crossfarm/builder-amd64:1"}
    settings = WorkerSettings(**{field: text}, emulation_images=images)
    assert getattr(settings, field) == arches


@pytest.mark.parametrize("field", ["cross_arches", "emulate_arches"])
def test_an_unknown_architecture_name_is_refused(field):
    with pytest.raises(ValidationError, match="unknown architecture 'riscv64'"):
        WorkerSettings(**{field: "arm64,riscv64"}, emulation_images={"arm64": ARM64_IMAGE})


def test_the_environment_is_read_as_comma_separated_names(monkeypatch):
    monkeypatch.setenv("CROSSFARM_CROSS_ARCHES", "aarch64")
    monkeypatch.setenv("CROSSFARM_EMULATE_ARCHES", "arm64")
    monkeypatch.setenv("CROSSFARM_EMULATION_IMAGES", '{"arm64": "crossfarm/builder-arm64:1"}')
    settings = WorkerSettings()
    assert settings.cross_arches == [Arch.ARM64]
    assert settings.emulate_arches == [Arch.ARM64]
    assert settings.emulation_images == {"arm64": ARM64_IMAGE}


def test_a_ca_bundle_that_exists_is_accepted(tmp_path):
    bundle = tmp_path / "ca.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert WorkerSettings(ca_bundle=bundle).ca_bundle == bundle


def test_a_ca_bundle_that_does_not_exist_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ValidationError, match="CROSSFARM_CA_BUNDLE"):
        WorkerSettings(ca_bundle=tmp_path / "missing.crt")


def test_a_directory_is_not_a_ca_bundle(tmp_path):
    with pytest.raises(ValidationError, match="not a readable file"):
        WorkerSettings(ca_bundle=tmp_path)


def test_the_stall_watchdog_is_on_at_ten_minutes_by_default():
    assert WorkerSettings().stall_s == 600


@pytest.mark.parametrize("value", ["0", "5", "20", "3600"])
def test_a_stall_limit_of_zero_or_of_some_seconds_is_read_from_the_environment(
        monkeypatch, value):
    monkeypatch.setenv("CROSSFARM_STALL_S", value)
    assert WorkerSettings().stall_s == float(value)


@pytest.mark.parametrize("value", [-1, 0.5, 4])
def test_a_stall_limit_too_short_to_judge_is_refused_naming_the_setting(value):
    with pytest.raises(ValidationError):
        WorkerSettings(stall_s=value)
    if value > 0:
        with pytest.raises(ValidationError, match="CROSSFARM_STALL_S"):
            WorkerSettings(stall_s=value)
