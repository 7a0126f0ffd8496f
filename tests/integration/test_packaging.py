"""What `make dist` makes, as CI installs it: one distribution, crossfarm, holding every
file of its four parts under `crossfarm/` and no generic top-level module.

Building needs PyPI (setuptools, in build's isolated environment) and so does the
install of the wheel with its dependencies, as on any CI runner.
"""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
#: The source folders that install as crossfarm.<part> (pyproject's package-dir).
PARTS = ("shared", "controller", "worker", "client")
VERSION = "0.1.0"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("make-dist") / "dist"
    made = subprocess.run(["make", "--no-print-directory", "dist", f"DIST={out}",
                           f"PYTHON={sys.executable}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    # `make dist` ends with twine's verdict on each file
    assert made.stdout.count("PASSED") == 2, made.stdout[-2000:]
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Iterator[zipfile.ZipFile]:
    with zipfile.ZipFile(dist / f"crossfarm-{VERSION}-py3-none-any.whl") as opened:
        yield opened


def tracked_files() -> set[str]:
    """Every file of the four parts in git, as the wheel should hold it."""
    listed = subprocess.run(["git", "ls-files", "-z", "--", *PARTS], cwd=REPO,
                            capture_output=True, check=True).stdout.decode()
    return {f"crossfarm/{name}" for name in listed.split("\0") if name}


def test_make_dist_makes_one_wheel_and_one_sdist(dist):
    assert sorted(p.name for p in dist.iterdir()) == [
        f"crossfarm-{VERSION}-py3-none-any.whl", f"crossfarm-{VERSION}.tar.gz"]


def test_the_wheel_holds_crossfarm_and_its_metadata_only(wheel):
    top = {name.split("/")[0] for name in wheel.namelist()}

    assert top == {"crossfarm", f"crossfarm-{VERSION}.dist-info"}


def test_the_wheel_holds_every_module_and_data_file_of_the_four_parts(wheel):
    shipped = {name for name in wheel.namelist() if name.startswith("crossfarm/")}
    expected = tracked_files()

    missing = sorted(expected - shipped)
    # A new subpackage (migrations, a dashboard) or data file (templates, static assets,
    # alembic's script template) must be named in pyproject.toml: [tool.setuptools]
    # packages + package-dir for folders of modules, package-data for other files.
    assert missing == [], f"not in the wheel: {missing}"
    assert sorted(shipped - expected) == []
    assert expected >= {"crossfarm/controller/store/schema.py", "crossfarm/client/cli.py"}


def test_the_sdist_carries_what_the_wheel_is_built_from(dist):
    with tarfile.open(dist / f"crossfarm-{VERSION}.tar.gz") as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}

    assert {"pyproject.toml", "README.md", "PKG-INFO"} <= names
    assert {name.removeprefix("crossfarm/") for name in tracked_files()} <= names


def test_the_wheel_declares_the_three_commands(wheel):
    entry_points = configparser.ConfigParser()
    entry_points.read_string(
        wheel.read(f"crossfarm-{VERSION}.dist-info/entry_points.txt").decode())

    assert dict(entry_points["console_scripts"]) == {
        "crossfarm": "crossfarm.client.__main__:main",
        "crossfarm-controller": "crossfarm.controller.app:main",
        "crossfarm-worker": "crossfarm.worker.app:main",
    }


def test_the_installed_wheel_runs_the_cli_and_puts_only_crossfarm_on_sys_path(dist, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = venv / "bin" / "python"
    # As docs/ci.md tells CI to: the wheel, with the client's (light) dependencies.
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", dist / f"crossfarm-{VERSION}-py3-none-any.whl"],
        capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    probe = (
        "import importlib.util, json;"
        "names = ['controller', 'worker', 'shared', 'client', 'crossfarm.controller',"
        " 'crossfarm.worker', 'crossfarm.shared', 'crossfarm.client', 'crossfarm.controller.api'];"
        "print(json.dumps({n: importlib.util.find_spec(n.split('.')[0]) is not None and"
        " importlib.util.find_spec(n) is not None for n in names}))"
    )
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=tmp_path)

    assert json.loads(out.stdout) == {
        "controller": False, "worker": False, "shared": False, "client": False,
        "crossfarm.controller": True, "crossfarm.worker": True, "crossfarm.shared": True,
        "crossfarm.client": True, "crossfarm.controller.api": True,
    }
    site = next((venv / "lib").glob("python*/site-packages"))
    assert not any((site / name).exists() for name in (*PARTS, "tests"))
    # the client install is light: no server dependency came with it
    assert not any(site.glob("celery*"))
    assert not any(site.glob("fastapi*"))
    cli = subprocess.run([venv / "bin" / "crossfarm", "--help"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert "build" in cli.stdout


def test_an_installed_controller_carries_its_migrations(tmp_path):
    # `crossfarm-controller migrate` on a machine with no checkout finds the revisions in
    # the installed package, not in the source tree.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(REPO)], check=True,
                   capture_output=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    versions = site / "crossfarm" / "controller" / "store" / "migrations" / "versions"
    shipped = sorted(path.name for path in versions.glob("0*.py"))
    in_tree = sorted(path.name for path in
                     (REPO / "controller" / "store" / "migrations" / "versions").glob("0*.py"))
    assert shipped == in_tree
    assert "0015_baseline.py" in shipped
    assert (site / "crossfarm" / "controller" / "store" / "migrations" / "env.py").is_file()
