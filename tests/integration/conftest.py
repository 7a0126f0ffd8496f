"""Real services for the integration tier: Redis, SeaweedFS (S3), the controller and a
worker, each a real process on free loopback ports, and the real Docker engine.

A missing service is a failure, never a skip: these tests are the proof that the
pipeline works.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from polling import until

REPO = Path(__file__).resolve().parents[2]
# The local-farm launcher is a script, not a package module: import it from its folder.
sys.path.insert(0, str(REPO / "deploy" / "local"))
import farm as localfarm  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
BUILDER_IMAGE = "crossfarm/builder:1"
FETCHER_IMAGE = "crossfarm/fetcher:1"
#: The shared amd64 worker's settings (a test that must restart it uses them too).
#: The tests' git servers listen on loopback, which a fetch may reach only if allowed.
WORKER_AMD64 = {"CROSSFARM_CROSS_ARCHES": "arm64", "CROSSFARM_CONCURRENCY": "2",
                "CROSSFARM_BUILD_CPUS": "1", "CROSSFARM_HEARTBEAT_S": "1",
                "CROSSFARM_GIT_ALLOW_NETWORKS": "127.0.0.0/8",
                # the builder images' trees from volumes, whatever the storage driver
                # (test_image_volumes.py); "auto" turns it on only for fuse-overlayfs
                "CROSSFARM_IMAGE_VOLUMES": "on"}
#: The controller's settings: short fleet bounds and sweeps, so tests of loss, placement
#: and leftovers do not wait for minutes (a test that restarts it uses them too). The
#: result cache is off: most tests build the same fixture crate again, and each is about
#: what a worker does with it; test_result_cache.py turns it on for its own tests.
CONTROLLER = {"CROSSFARM_LOST_AFTER_S": "6", "CROSSFARM_PLACER_INTERVAL_S": "0.5",
              "CROSSFARM_LEASE_GRACE_S": "5", "CROSSFARM_RECONCILE_AFTER_S": "5",
              "CROSSFARM_UPLOAD_SWEEP_S": "1", "CROSSFARM_RESULT_CACHE": "false"}




def _require(condition: bool, message: str) -> None:
    if not condition:
        pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A whole farm: one amd64 worker that also serves arm64 with its cross toolchain."""
    for tool in ("redis-server", "weed", "docker"):
        _require(shutil.which(tool) is not None, f"{tool} is not installed (make install)")
    docker_ok = subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    _require(docker_ok, "the Docker engine does not answer (docker info failed)")
    image_ok = subprocess.run(["docker", "image", "inspect", BUILDER_IMAGE],
                              capture_output=True).returncode == 0
    _require(image_ok, f"builder image {BUILDER_IMAGE} is missing (make image)")
    fetcher_ok = subprocess.run(["docker", "image", "inspect", FETCHER_IMAGE],
                                capture_output=True).returncode == 0
    _require(fetcher_ok, f"fetcher image {FETCHER_IMAGE} is missing (make image)")
    state = tmp_path_factory.mktemp("farm")
    # With tokens, as a shared farm runs: the CLI and `api` present the operator's (they
    # drain workers), FarmClient(token=farm.client_token) the legacy client token; the
    # workers get a worker token the launcher makes.
    running = localfarm.Farm(dir=state, client_token="integration-client-token",
                             operator_token="integration-operator-token")
    try:
        running.start_redis()
        running.start_s3()
        running.start_controller(**CONTROLLER)
        running.start_worker("worker-amd64", **WORKER_AMD64)
        yield running
    finally:
        running.stop()


@pytest.fixture
def api(farm: localfarm.Farm) -> Iterator[httpx.Client]:
    """An HTTP client of the farm's controller API."""
    with httpx.Client(base_url=farm.controller_url, headers=farm.auth, timeout=30) as client:
        yield client


@pytest.fixture
def only(farm: localfarm.Farm, api: httpx.Client) -> Iterator[None]:
    """Let only the named worker take jobs: drain the shared one for the test."""
    assert api.post("/v1/workers/worker-amd64/drain").status_code == 200
    until(lambda: farm.worker_state("worker-amd64") == "drained", "worker-amd64 drained")
    yield
    api.delete("/v1/workers/worker-amd64/drain")
    until(lambda: farm.worker_state("worker-amd64") == "online", "worker-amd64 back")


def plain_crate(parent: Path, name: str, build_rs: str | None = None) -> Path:
    """A binary crate with no dependencies (and its Cargo.lock) at parent/name, printing
    its name; with `build_rs`, that build script. Each build of it takes seconds."""
    crate = parent / name
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text(
        f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n')
    (crate / "Cargo.lock").write_text(
        f'version = 3\n\n[[package]]\nname = "{name}"\nversion = "0.1.0"\n')
    if build_rs is not None:
        (crate / "build.rs").write_text(build_rs)
    (crate / "src" / "main.rs").write_text(f'fn main() {{ println!("{name}"); }}\n')
    return crate


@pytest.fixture
def crate(tmp_path: Path) -> Path:
    """A fresh copy of the hello-c crate (crates.io dependency + C built by the cc crate)."""
    dest = tmp_path / "hello-c"
    shutil.copytree(FIXTURES / "hello-c", dest)
    return dest


@pytest.fixture
def cli(farm: object) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real `crossfarm` CLI against the farm, in a directory, as a user would."""

    def run(cwd: Path, *args: str, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`env`: instead of the farm's environment (which holds its URL and token)."""
        return subprocess.run(
            [sys.executable, "-m", "crossfarm.client", *args],
            cwd=cwd, env=env or farm.env(), capture_output=True,  # type: ignore[attr-defined]
            text=True, timeout=timeout,
        )

    return run
