"""The image scripts refuse bad arguments by name, before building or pushing anything."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

IMAGES = Path(__file__).resolve().parents[2] / "deploy" / "images"


def _run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(IMAGES / script), *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})


@pytest.mark.parametrize("script", ["builder/build-offline.sh", "crossfarm/build-offline.sh",
                                    "infra/build-offline.sh", "fetcher/build-offline.sh"])
def test_an_unknown_architecture_is_refused_naming_the_two_known(script: str) -> None:
    done = _run(script, "--arch", "riscv64", "x/y:1")
    assert done.returncode == 2
    assert "unknown architecture 'riscv64': use amd64 or arm64" in done.stderr


def test_release_refuses_a_registry_that_is_not_host_port() -> None:
    done = _run("release.sh", "http://127.0.0.1:5000")
    assert done.returncode == 1
    assert "REGISTRY 'http://127.0.0.1:5000' is not host[:port][/path]" in done.stderr


def test_release_refuses_an_invalid_tag() -> None:
    done = _run("release.sh", "127.0.0.1:5000", "bad/tag")
    assert done.returncode == 1
    assert "TAG 'bad/tag' is not a valid image tag" in done.stderr


def test_release_refuses_an_image_it_does_not_know() -> None:
    done = _run("release.sh", "127.0.0.1:5000", "1", IMAGES="crossfarm postgres")
    assert done.returncode == 1
    assert "no image 'postgres'" in done.stderr


def test_release_without_a_registry_says_how_to_call_it() -> None:
    done = _run("release.sh")
    assert done.returncode == 1
    assert "usage: release.sh REGISTRY [TAG]" in done.stderr
