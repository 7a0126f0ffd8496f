"""The image scripts refuse bad arguments by name, before building or pushing anything."""

from __future__ import annotations

import os
import shutil
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


@pytest.mark.parametrize(("args", "message"), [
    (("builder", "riscv64"), "unknown architecture 'riscv64': use amd64 or arm64"),
    (("postgres", "amd64"), "no image 'postgres' (deploy/images/postgres/build-offline.sh)"),
    (("builder", "amd64", "Not A Tag"), "TAG 'Not A Tag' is not an image name"),
])
def test_local_build_refuses_bad_arguments_by_name(args: tuple[str, ...], message: str) -> None:
    done = _run("local-build.sh", *args)
    assert done.returncode == 1
    assert message in done.stderr


def test_local_build_keep_needs_the_tag_it_would_keep() -> None:
    done = _run("local-build.sh", "--keep", "builder", "arm64")
    assert done.returncode == 2
    assert "usage: local-build.sh [--name | --keep] NAME ARCH [TAG]" in done.stderr


def _image_tree(root: Path) -> Path:
    """A copy of what the builder image is made from, plus a file it is not."""
    images = root / "deploy" / "images"
    images.mkdir(parents=True)
    for part in ("local-build.sh", "rootfs_image.py", "binfmt.sh", "offline.sh", "builder",
                 "README.md"):
        source = IMAGES / part
        if source.is_dir():
            shutil.copytree(source, images / part)
        else:
            shutil.copy2(source, images / part)
    return images


def test_local_build_names_a_new_build_when_an_input_changes_and_only_then(
        tmp_path: Path) -> None:
    images = _image_tree(tmp_path)

    def name(arch: str = "arm64") -> str:
        done = subprocess.run(["bash", str(images / "local-build.sh"), "--name", "builder", arch],
                              capture_output=True, text=True, timeout=60, check=True)
        return done.stdout.strip()

    first = name()
    assert first.startswith("crossfarm-release/builder:")
    assert first.endswith("-arm64")
    assert name() == first
    assert name("amd64") != first.replace("-arm64", "-amd64")  # the arch is an input too
    (images / "README.md").write_text("not what the builder is made from\n")
    assert name() == first
    with (images / "builder" / "packages.txt").open("a") as packages:
        packages.write("jq\n")
    assert name() != first
    # and so does a change to what every build-offline.sh sources
    second = name()
    with (images / "offline.sh").open("a") as options:
        options.write("# another default\n")
    assert name() != second

