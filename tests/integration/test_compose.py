"""deploy/compose brought up from images `make release-images` pushed to a real registry
on loopback: controller, one worker of this host's own architecture, Redis with its
append-only file, PostgreSQL and SeaweedFS; the CLI on the host builds a crate through
it for x86_64 and aarch64 (the other one with the builder's cross toolchain); then
`docker-compose down -v` leaves no container, network or volume of the project.

Slow: the `release` tier, run by `make release-test` from .ci/run after `make test`.
"""

from __future__ import annotations

import base64
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.polling import until
from tests.integration.registry import IMAGES, PLATFORMS, forget_local, release, running_registry

pytestmark = [pytest.mark.integration, pytest.mark.release, pytest.mark.timeout(5400)]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "compose" / "docker-compose.yml"
FIXTURE = ROOT / "tests" / "fixtures" / "hello-c"
TARGETS = ("x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu")
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]
OTHER_ARCH = {"amd64": "arm64", "arm64": "amd64"}[HOST_ARCH]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ComposeFarm:
    """A compose project of deploy/compose, brought up by this test module."""

    project: str
    env_file: Path
    url: str
    client_token: str
    operator_token: str
    deps_volume: str
    state: Path

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["docker-compose", "--project-name", self.project,
                               "--file", str(COMPOSE_FILE), "--env-file", str(self.env_file),
                               *args], capture_output=True, text=True, timeout=1800)
        assert not check or done.returncode == 0, (
            f"docker-compose {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done

    def save_logs(self) -> None:
        """Every service's output, kept beside the .env for a failure's post-mortem."""
        logs = self.compose("logs", "--no-color", check=False).stdout
        if logs.strip():
            (self.state / "compose.log").write_text(logs)

    def exec(self, service: str, *command: str) -> str:
        return self.compose("exec", "-T", service, *command).stdout.strip()

    def workers(self) -> list[dict]:
        try:
            reply = httpx.get(f"{self.url}/v1/workers", timeout=5,
                              headers={"Authorization": f"Bearer {self.operator_token}"})
        except httpx.HTTPError:
            return []
        return list(reply.json()["workers"]) if reply.status_code == 200 else []

    def leftovers(self) -> dict[str, list[str]]:
        """The project's containers, networks and volumes the engine still has."""
        label = f"label=com.docker.compose.project={self.project}"
        found = {kind: subprocess.run(["docker", kind, "ls", "-q", "--filter", label],
                                      capture_output=True, text=True, check=True
                                      ).stdout.split()
                 for kind in ("network", "volume")}
        found["container"] = subprocess.run(["docker", "ps", "-aq", "--filter", label],
                                            capture_output=True, text=True,
                                            check=True).stdout.split()
        return found


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(image prefix, tag) of every image, pushed to a registry on loopback."""
    with running_registry(tmp_path_factory.mktemp("registry")) as registry:
        tag = release(registry)
        prefix = f"{registry.host}/crossfarm"
        yield prefix, tag
        forget_local([f"{prefix}/{name}:{tag}{suffix}" for name in IMAGES
                      for suffix in ("", *(f"-{arch}" for arch in PLATFORMS))])


@pytest.fixture(scope="module")
def farm(published: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[ComposeFarm]:
    prefix, tag = published
    state = tmp_path_factory.mktemp("compose")
    project = f"cfcompose{uuid.uuid4().hex[:8]}"
    controller_port, s3_port = _free_port(), _free_port()
    tokens = {name: secrets.token_hex(24) for name in ("worker", "operator", "client")}
    egress = state / "egress"
    egress.mkdir()
    values = {
        "CROSSFARM_IMAGES": prefix, "CROSSFARM_TAG": tag,
        "CROSSFARM_CONTROLLER_PORT": str(controller_port), "CROSSFARM_S3_PORT": str(s3_port),
        "CROSSFARM_S3_PUBLIC_ENDPOINT": f"http://127.0.0.1:{s3_port}",
        "CROSSFARM_S3_SECRET_KEY": secrets.token_hex(24),
        "CROSSFARM_POSTGRES_PASSWORD": secrets.token_hex(24),
        "CROSSFARM_SECRETS_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "CROSSFARM_WORKER_TOKEN": tokens["worker"],
        "CROSSFARM_OPERATOR_TOKEN": tokens["operator"],
        "CROSSFARM_CLIENT_TOKEN": tokens["client"],
        "CROSSFARM_CROSS_ARCHES": OTHER_ARCH,
        "CROSSFARM_WORKER_NAME": f"{project}-worker",
        "CROSSFARM_DEPS_VOLUME": f"{project}-deps",
        "CROSSFARM_EGRESS_DIR": str(egress),
    }
    env_file = state / ".env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    farm = ComposeFarm(project, env_file, f"http://127.0.0.1:{controller_port}",
                       tokens["client"], tokens["operator"], values["CROSSFARM_DEPS_VOLUME"],
                       state)
    try:
        farm.compose("up", "-d")
        until(lambda: any(w["name"] == values["CROSSFARM_WORKER_NAME"]
                          and w["state"] == "online" for w in farm.workers()),
              "the compose worker to come online", timeout=300, every=2)
        yield farm
    finally:
        farm.save_logs()
        farm.compose("down", "-v", "--timeout", "30", check=False)


def test_the_cli_builds_a_crate_for_both_targets_through_compose(
        farm: ComposeFarm, tmp_path: Path) -> None:
    crate = tmp_path / "hello-c"
    shutil.copytree(FIXTURE, crate, ignore=shutil.ignore_patterns("target"))
    targets = [arg for target in TARGETS for arg in ("--target", target)]
    done = subprocess.run([sys.executable, "-m", "crossfarm.client", "build", *targets,
                           "--release"], cwd=crate, capture_output=True, text=True,
                          timeout=1800, env={**os.environ, "CROSSFARM_URL": farm.url,
                                             "CROSSFARM_TOKEN": farm.client_token})
    assert done.returncode == 0, f"crossfarm build:\n{done.stdout}\n{done.stderr}"
    kinds = {target: subprocess.run(
        ["file", "-b", str(crate / "target" / target / "release" / "hello-c")],
        capture_output=True, text=True, check=True).stdout for target in TARGETS}
    assert "x86-64" in kinds["x86_64-unknown-linux-gnu"]
    assert "ARM aarch64" in kinds["aarch64-unknown-linux-gnu"]


def test_the_worker_is_of_this_hosts_architecture_and_builds_the_other_by_cross(
        farm: ComposeFarm) -> None:
    assert farm.exec("worker", "python3", "-c",
                     "import platform; print(platform.machine())") == platform.machine()
    image = farm.exec("worker", "sh", "-c", "echo $CROSSFARM_BUILDER_IMAGE")
    architecture = subprocess.run(["docker", "image", "inspect", "--format",
                                   "{{.Architecture}}", image], capture_output=True,
                                  text=True, check=True).stdout.strip()
    assert architecture == HOST_ARCH


def test_the_controller_keeps_its_records_in_postgresql(farm: ComposeFarm) -> None:
    count = farm.exec("postgres", "psql", "-h", "/tmp", "-U", "crossfarm", "-d", "crossfarm",
                      "-Atc", "SELECT count(*) FROM jobs WHERE state = 'succeeded'")
    assert int(count) >= len(TARGETS)


def test_redis_keeps_an_append_only_file(farm: ComposeFarm) -> None:
    assert farm.exec("redis", "redis-cli", "config", "get", "appendonly").split() == [
        "appendonly", "yes"]


def test_the_controller_and_the_worker_report_healthy_through_their_own_probes(
        farm: ComposeFarm) -> None:
    # compose's healthchecks call the controller's /readyz (database, Redis, S3) and the
    # worker's /healthz (its heartbeat thread), the endpoints Helm's probes use too.
    def health(service: str) -> str:
        container = farm.compose("ps", "-q", service).stdout.strip()
        return subprocess.run(["docker", "inspect", "--format", "{{.State.Health.Status}}",
                               container], capture_output=True, text=True,
                              check=True).stdout.strip()

    for service in ("controller", "worker"):
        until(lambda service=service: health(service) == "healthy",
              f"compose's {service} to be healthy", timeout=300, every=2)


def test_down_with_volumes_leaves_nothing_of_the_project(farm: ComposeFarm) -> None:
    farm.save_logs()
    farm.compose("down", "-v", "--timeout", "30")
    assert farm.leftovers() == {"container": [], "network": [], "volume": []}
    gone = subprocess.run(["docker", "volume", "inspect", farm.deps_volume],
                          capture_output=True)
    assert gone.returncode != 0, f"the worker's deps volume {farm.deps_volume} is left"
