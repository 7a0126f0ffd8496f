"""The arm64 test image is truly aarch64: its Python, its worker deps and its Rust toolchain
run under QEMU user emulation, and what it compiles is aarch64 code.

The image is made by deploy/images/arm64-test/build-offline.sh; a missing image or a
missing binfmt registration is a failure, never a skip.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

IMAGE = "crossfarm/arm64-test:1"
BUILD_SCRIPT = "deploy/images/arm64-test/build-offline.sh"
BUILD_UID = 10001


def _docker_run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "run", "--rm", *args], capture_output=True, text=True,
                          timeout=timeout)


def _output(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited with {result.returncode}:\n{result.stderr}")
    return result.stdout.strip()


@pytest.fixture(scope="module")
def image() -> str:
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.fail("the Docker engine does not answer (docker info failed)", pytrace=False)
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode:
        pytest.fail(f"image {IMAGE} is missing: run {BUILD_SCRIPT} (as root, about 8 minutes)",
                    pytrace=False)
    probe = _docker_run("--network", "none", IMAGE, "true")
    if probe.returncode != 0:
        # The image exists but aarch64 programs cannot start: binfmt is lost on reboot.
        pytest.fail(f"{IMAGE} cannot run here ({probe.stderr.strip()}); run {BUILD_SCRIPT} "
                    "as root, which registers qemu-aarch64 with binfmt_misc", pytrace=False)
    return IMAGE


def test_python_in_the_image_reports_an_aarch64_machine(image):
    code = "import platform; print(platform.machine())"
    assert _output(_docker_run("--user", "0", image, "python3", "-c", code)) == "aarch64"


def test_the_worker_dependencies_import_in_the_image(image):
    code = "import celery, redis, docker, boto3, httpx, pydantic, pydantic_settings"
    _output(_docker_run("--user", "0", image, "python3", "-c", code))


def test_cargo_and_rustc_run_as_the_default_user(image):
    assert _output(_docker_run(image, "id", "-u")) == str(BUILD_UID)
    assert _output(_docker_run(image, "cargo", "--version")).startswith("cargo ")
    assert _output(_docker_run(image, "rustc", "--version")).startswith("rustc ")


def test_a_crate_built_in_the_image_runs_as_aarch64_code(image, tmp_path: Path):
    crate = tmp_path / "hello"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text(
        '[package]\nname = "hello"\nversion = "0.1.0"\nedition = "2021"\n')
    (crate / "src" / "main.rs").write_text(
        'fn main() { println!("{}", std::env::consts::ARCH); }\n')
    # The build user must write Cargo.lock beside the manifest; the target dir stays in
    # the container's /tmp.
    for path in (crate, crate / "src"):
        path.chmod(0o777)
    result = _docker_run("--network", "none", "--user", f"{BUILD_UID}:{BUILD_UID}",
                         "-v", f"{crate}:/work/hello", "-w", "/work/hello",
                         "-e", "CARGO_TARGET_DIR=/tmp/target",
                         image, "cargo", "run", "--quiet", "--offline", timeout=600)
    assert _output(result) == "aarch64"
