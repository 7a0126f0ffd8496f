"""`pip install .` gives one distribution, crossfarm, and no generic top-level modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_install_puts_only_crossfarm_on_sys_path(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(REPO)], check=True,
                   capture_output=True)
    probe = (
        "import importlib.util, json;"
        "names = ['controller', 'worker', 'shared', 'client', 'crossfarm.controller',"
        " 'crossfarm.worker', 'crossfarm.shared', 'crossfarm.client', 'crossfarm.controller.api'];"
        "print(json.dumps({n: importlib.util.find_spec(n.split('.')[0]) is not None and"
        " importlib.util.find_spec(n) is not None for n in names}))"
    )
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    import json

    found = json.loads(out.stdout)
    assert found == {
        "controller": False, "worker": False, "shared": False, "client": False,
        "crossfarm.controller": True, "crossfarm.worker": True, "crossfarm.shared": True,
        "crossfarm.client": True, "crossfarm.controller.api": True,
    }
    site = next((venv / "lib").glob("python*/site-packages"))
    generic = ("controller", "worker", "shared", "client", "tests")
    assert not any((site / name).exists() for name in generic)
    assert (venv / "bin" / "crossfarm").exists()


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
