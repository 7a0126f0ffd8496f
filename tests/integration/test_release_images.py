"""`make release-images` against a real registry on loopback: every image is published
for amd64 and arm64 under one manifest list, each platform pulled by its digest is an
image of that architecture, and the images work on their platform (arm64 under QEMU).

Slow (every image built for both architectures, arm64 under emulation): the `release`
tier, run by `make release-test` from .ci/run after `make test`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry import (
    IMAGES,
    PLATFORMS,
    Registry,
    forget_local,
    release,
    running_registry,
)

pytestmark = [pytest.mark.integration, pytest.mark.release, pytest.mark.timeout(5400)]

HELLO = """fn main() { println!("hello from {}", std::env::consts::ARCH); }\n"""


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, str]]:
    with running_registry(tmp_path_factory.mktemp("registry")) as registry:
        tag = release(registry)
        yield registry, tag
        forget_local([f"{registry.host}/crossfarm/{name}:{tag}-{arch}"
                      for name in IMAGES for arch in PLATFORMS])


@pytest.fixture(scope="module")
def pulled(published: tuple[Registry, str]) -> Iterator[dict[tuple[str, str], str]]:
    """Each image of each platform pulled by the digest its manifest list names."""
    registry, tag = published
    references: dict[tuple[str, str], str] = {}
    for name in IMAGES:
        for entry in registry.index(name, tag)["manifests"]:
            arch = entry["platform"]["architecture"]
            reference = f"{registry.host}/crossfarm/{name}@{entry['digest']}"
            subprocess.run(["docker", "pull", "--quiet", reference], check=True,
                           capture_output=True)
            references[name, arch] = reference
    yield references
    forget_local(list(references.values()))


def _inspect(reference: str, field: str) -> str:
    return subprocess.run(["docker", "image", "inspect", "--format", field, reference],
                          check=True, capture_output=True, text=True).stdout.strip()


def _run(reference: str, *command: str, docker_args: tuple[str, ...] = ()) -> str:
    # No --platform: this engine would try to pull for it; the image's own platform runs
    # under binfmt when it is not the host's.
    done = subprocess.run(["docker", "run", "--rm", "--network", "none", *docker_args,
                           reference, *command], capture_output=True, text=True)
    assert done.returncode == 0, f"{reference} {command}: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_every_image_is_one_manifest_list_for_amd64_and_arm64(
        published: tuple[Registry, str]) -> None:
    registry, tag = published
    for name in IMAGES:
        platforms = {(m["platform"]["os"], m["platform"]["architecture"],
                      m["platform"].get("variant"))
                     for m in registry.index(name, tag)["manifests"]}
        assert platforms == {("linux", "amd64", None), ("linux", "arm64", "v8")}, name


def test_each_platform_pulled_by_digest_is_an_image_of_that_architecture(
        pulled: dict[tuple[str, str], str]) -> None:
    assert set(pulled) == {(name, arch) for name in IMAGES for arch in PLATFORMS}
    for (name, arch), reference in pulled.items():
        architecture, variant = PLATFORMS[arch]
        assert _inspect(reference, "{{.Os}}/{{.Architecture}}") == f"linux/{architecture}", name
        assert _inspect(reference, "{{.Variant}}") == (variant or ""), name
        # The engine records where the image came from: this registry, by that digest.
        assert reference in _inspect(reference, "{{json .RepoDigests}}"), name


def test_the_controller_image_of_each_platform_runs_there_with_postgres_support(
        pulled: dict[tuple[str, str], str]) -> None:
    probe = ("import platform, psycopg, crossfarm.controller.app, crossfarm.worker.app; "
             "print(platform.machine(), psycopg.pq.__impl__)")
    assert _run(pulled["crossfarm", "amd64"], "python3", "-c", probe).split() == [
        "x86_64", "binary"]
    assert _run(pulled["crossfarm", "arm64"], "python3", "-c", probe).split() == [
        "aarch64", "binary"]


def _build_hello(reference: str, target: str, tmp_path: Path) -> Path:
    crate = tmp_path / f"hello-{target}"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text(
        '[package]\nname = "hello"\nversion = "0.1.0"\nedition = "2021"\n')
    (crate / "src" / "main.rs").write_text(HELLO)
    shutil.chown(crate, user=10001, group=10001)
    for path in crate.rglob("*"):
        shutil.chown(path, user=10001, group=10001)
    _run(reference, "cargo", "build", "--release", "--offline", "--target", target,
         docker_args=("-v", f"{crate}:/work/hello", "-w", "/work/hello"))
    return crate / "target" / target / "release" / "hello"


def test_the_arm64_builder_cross_compiles_an_x86_64_binary_that_runs_here(
        pulled: dict[tuple[str, str], str], tmp_path: Path) -> None:
    binary = _build_hello(pulled["builder", "arm64"], "x86_64-unknown-linux-gnu", tmp_path)
    assert "x86-64" in subprocess.run(["file", "-b", str(binary)], capture_output=True,
                                      text=True, check=True).stdout
    assert subprocess.run([str(binary)], capture_output=True, text=True,
                          check=True).stdout == "hello from x86_64\n"


def test_the_amd64_builder_cross_compiles_an_aarch64_binary(
        pulled: dict[tuple[str, str], str], tmp_path: Path) -> None:
    binary = _build_hello(pulled["builder", "amd64"], "aarch64-unknown-linux-gnu", tmp_path)
    assert "ARM aarch64" in subprocess.run(["file", "-b", str(binary)], capture_output=True,
                                           text=True, check=True).stdout
