"""The CLI takes cargo's own flags, as a Rust developer types them, on the real farm:
package and target selection in a workspace, --timings, -v, -j, --frozen, global flags
before the command; a mistyped target is refused before anything is uploaded."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from crossfarm.shared.wire import API_VERSION, FarmStats, crossfarm_version

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"
FIXTURE = Path(__file__).parents[1] / "fixtures" / "cargo-ws"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A fresh copy of a workspace: lib greet, bins app (with example demo) and tool."""
    dest = tmp_path / "cargo-ws"
    shutil.copytree(FIXTURE, dest)
    return dest


def _ran(binary: Path) -> str:
    return subprocess.run([binary], capture_output=True, text=True, check=True).stdout


def _built(ws: Path) -> set[str]:
    out = ws / "target" / X86 / "debug"
    return {p.name for p in out.iterdir()} if out.is_dir() else set()


def _stats(farm) -> FarmStats:
    return FarmStats.model_validate(
        httpx.get(f"{farm.controller_url}/v1/stats", headers=farm.auth).json())


def test_workspace_with_global_flags_first_timings_verbose_jobs_and_frozen(farm, ws, cli):
    # the URL and --json given before the command only: the environment names no farm
    env = {k: v for k, v in farm.env().items() if k != "CROSSFARM_URL"}
    result = cli(ws, "--url", farm.controller_url, "--json", "build", "--target", X86,
                 "--workspace", "--timings", "-v", "-j", "1", "--frozen", env=env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["build"]["state"] == "succeeded"
    assert document["build"]["cargo"]["cargo_args"] == [
        "--workspace", "--jobs=1", "-v", "--frozen", "--timings"]
    assert {a["name"] for a in document["artifacts"]} == {"app", "tool", "cargo-timing.html"}
    assert _built(ws) == {"app", "tool", "cargo-timing.html"}
    assert _ran(ws / "target" / X86 / "debug" / "app") == "app says hello\n"
    assert _ran(ws / "target" / X86 / "debug" / "tool") == "tool ran\n"
    assert "<html" in (ws / "target" / X86 / "debug" / "cargo-timing.html").read_text()
    # -v reached cargo: it shows the rustc command lines it runs
    assert "Running `rustc --crate-name greet" in result.stderr
    assert "warning: the farm" not in result.stderr  # same API version: nothing to say


# --locked too: the worker locks a crate with a Cargo.lock itself, and cargo refuses a flag
# given twice, so this also proves the farm gives it once.
@pytest.mark.parametrize(("flags", "built"), [
    (["-p", "tool", "--locked"], {"tool"}),
    (["--workspace", "--exclude", "tool", "--locked"], {"app"}),
], ids=["p", "workspace-exclude"])
def test_packages_of_the_workspace_chosen_as_in_cargo(farm, ws, cli, flags, built):
    result = cli(ws, "build", "--target", X86, *flags)
    assert result.returncode == 0, result.stderr
    assert _built(ws) == built


def test_an_example_from_inside_its_member(farm, ws, cli):
    result = cli(ws / "app", "build", "--target", X86, "--example", "demo", "--json")
    assert result.returncode == 0, result.stderr
    assert [a["name"] for a in json.loads(result.stdout)["artifacts"]] == ["demo"]
    # the member's package was named for it (-p app), and the workspace's target/ used
    assert json.loads(result.stdout)["build"]["cargo"]["cargo_args"] == [
        "--package=app", "--example=demo"]
    assert _ran(ws / "target" / X86 / "debug" / "demo") == "demo says hello\n"
    assert not (ws / "app" / "target").exists()


def test_a_mistyped_target_is_refused_before_anything_is_uploaded(farm, ws, cli):
    (ws / "tool" / "src" / "main.rs").write_text('fn main() { println!("never sent"); }\n')
    before = _stats(farm)
    result = cli(ws, "build", "--target", "x86_64-unknown-linux-gun")
    assert result.returncode == 2
    assert ("target 'x86_64-unknown-linux-gun' is not supported; supported targets: "
            "aarch64-unknown-linux-gnu, x86_64-unknown-linux-gnu") in result.stderr
    assert _stats(farm) == before  # no blob asked about, none received


def test_a_flag_the_farm_owns_is_refused_by_the_farms_allow_list(farm, ws, cli):
    result = cli(ws, "build", "--target", X86, "--", "--target-dir=/tmp/x")
    assert result.returncode == 2
    assert ("cargo argument '--target-dir=/tmp/x' is not allowed: the farm chooses where "
            "outputs go") in result.stderr


def test_the_farm_reports_the_version_and_api_the_cli_knows(farm, cli, tmp_path):
    health = httpx.get(f"{farm.controller_url}/v1/health").json()
    assert (health["ok"], health["version"], health["api"]) == (
        True, crossfarm_version(), API_VERSION)
    shown = cli(tmp_path, "--version")
    assert shown.stdout == f"crossfarm {crossfarm_version()} (API {API_VERSION})\n"
