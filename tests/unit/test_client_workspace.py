"""Finding the workspace a crate builds in, as cargo finds it, from manifests alone."""

from pathlib import Path

import pytest

from crossfarm.client.workspace import Crate, locate
from crossfarm.shared.errors import UsageError


def _manifest(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Cargo.toml").write_text(text)
    return directory / "Cargo.toml"


def _package(name: str, extra: str = "") -> str:
    return f'[package]\nname = "{name}"\nversion = "0.1.0"\n{extra}'


def test_a_lone_crate_is_its_own_root(tmp_path):
    manifest = _manifest(tmp_path / "app", _package("app"))
    assert locate(manifest) == Crate(tmp_path / "app", None)


def test_a_workspace_root_builds_as_itself_with_no_package_chosen(tmp_path):
    virtual = _manifest(tmp_path, '[workspace]\nmembers = ["crates/*"]\n')
    assert locate(virtual) == Crate(tmp_path, None)
    rooted = _manifest(tmp_path / "both", _package("both", "[workspace]\n"))
    assert locate(rooted) == Crate(tmp_path / "both", None)


def test_a_member_sends_the_nearest_workspace_and_names_itself(tmp_path, monkeypatch):
    _manifest(tmp_path, '[workspace]\nmembers = ["crates/*"]\n')
    member = _manifest(tmp_path / "crates" / "app", _package("app-bin"))
    assert locate(member) == Crate(tmp_path, "app-bin")
    # `crossfarm build` in the member's directory passes a relative path
    monkeypatch.chdir(member.parent)
    assert locate(Path("Cargo.toml")) == Crate(tmp_path, "app-bin")


def test_ancestors_without_a_workspace_table_are_passed_over(tmp_path):
    _manifest(tmp_path, '[workspace]\nmembers = ["outer/inner"]\n')
    _manifest(tmp_path / "outer", _package("outer"))
    inner = _manifest(tmp_path / "outer" / "inner", _package("inner"))
    assert locate(inner) == Crate(tmp_path, "inner")


def test_an_excluded_crate_or_one_below_an_excluded_path_is_its_own_root(tmp_path):
    _manifest(tmp_path, '[workspace]\nmembers = ["crates/*"]\nexclude = ["vendor", "tools/x"]\n')
    below = _manifest(tmp_path / "vendor" / "dep", _package("dep"))
    assert locate(below) == Crate(tmp_path / "vendor" / "dep", None)
    named = _manifest(tmp_path / "tools" / "x", _package("x"))
    assert locate(named) == Crate(tmp_path / "tools" / "x", None)
    # a sibling whose name merely starts like an excluded path is still a member
    sibling = _manifest(tmp_path / "tools" / "xy", _package("xy"))
    assert locate(sibling) == Crate(tmp_path, "xy")


def test_package_workspace_points_at_the_root_explicitly(tmp_path):
    _manifest(tmp_path / "ws", '[workspace]\nmembers = ["../elsewhere/app"]\n')
    member = _manifest(tmp_path / "elsewhere" / "app",
                       _package("app", 'workspace = "../../ws"\n'))
    assert locate(member) == Crate(tmp_path / "ws", "app")


def test_package_workspace_pointing_at_no_workspace_is_an_error_naming_both(tmp_path):
    _manifest(tmp_path / "ws", _package("not-a-workspace"))
    member = _manifest(tmp_path / "app", _package("app", 'workspace = "../ws"\n'))
    with pytest.raises(UsageError, match=r"package.workspace points at .*ws, whose Cargo.toml "
                                        r"has no \[workspace\]"):
        locate(member)


@pytest.mark.parametrize(("text", "message"), [
    ("[package\nname = 1", "cannot be read"),
    ("[dependencies]\n", "neither \\[package\\] with a name nor \\[workspace\\]"),
    ('[package]\nversion = "1.0.0"\n', "neither \\[package\\] with a name"),
])
def test_a_manifest_cargo_could_not_use_is_an_error_naming_it(tmp_path, text, message):
    manifest = _manifest(tmp_path / "app", text)
    with pytest.raises(UsageError, match=message) as refused:
        locate(manifest)
    assert str(manifest) in str(refused.value)


def test_a_broken_ancestor_manifest_is_an_error_as_it_is_for_cargo(tmp_path):
    _manifest(tmp_path, "[workspace\n")
    member = _manifest(tmp_path / "app", _package("app"))
    with pytest.raises(UsageError, match=f"{tmp_path / 'Cargo.toml'} cannot be read"):
        locate(member)
