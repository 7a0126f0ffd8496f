"""A real image registry on loopback for the release tier, and `make release-images` into it.

Debian's `docker-registry` (the CNCF distribution server) runs with its own config and
storage directory on a free 127.0.0.1 port; the engine talks plain HTTP to it because
127.0.0.0/8 is an insecure registry by default.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.integration.polling import until

ROOT = Path(__file__).resolve().parents[2]
#: every image `make release-images` publishes
IMAGES = ("crossfarm", "builder", "fetcher", "infra")
#: Docker's platform names for the two architectures, as a manifest list carries them
PLATFORMS = {"amd64": ("amd64", None), "arm64": ("arm64", "v8")}
_INDEX_TYPES = ("application/vnd.docker.distribution.manifest.list.v2+json, "
                "application/vnd.oci.image.index.v1+json")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Registry:
    """A running registry: `host` is what image references start with."""

    host: str

    def url(self, path: str) -> str:
        return f"http://{self.host}/v2/{path}"

    def index(self, name: str, tag: str) -> dict:
        """The manifest list of crossfarm/NAME:TAG."""
        response = httpx.get(self.url(f"crossfarm/{name}/manifests/{tag}"),
                             headers={"Accept": _INDEX_TYPES}, timeout=30)
        response.raise_for_status()
        return dict(response.json())

    def answers(self) -> bool:
        try:
            return httpx.get(self.url(""), timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


@contextmanager
def running_registry(directory: Path) -> Iterator[Registry]:
    """A docker-registry process on a free loopback port, stopped (and its storage
    deleted) on the way out."""
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is not installed (apt-get install docker-registry)"
    port = _free_port()
    storage = directory / "storage"
    storage.mkdir(parents=True)
    config = directory / "config.yml"
    # JSON is YAML: the registry reads this as its config file.
    config.write_text(json.dumps({
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }))
    log = (directory / "registry.log").open("wb")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    registry = Registry(f"127.0.0.1:{port}")
    try:
        until(lambda: registry.answers() or proc.poll() is not None, "docker-registry", 60)
        log_text = (directory / "registry.log").read_text
        assert proc.poll() is None, f"docker-registry exited: {log_text()}"
        yield registry
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(storage, ignore_errors=True)


def release(registry: Registry, tag: str | None = None) -> str:
    """Run `make release-images` into `registry`; return the tag it pushed."""
    tag = tag or f"t{uuid.uuid4().hex[:10]}"
    done = subprocess.run(["make", "--no-print-directory", "release-images",
                           f"REGISTRY={registry.host}", f"TAG={tag}"],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHON": "python3"})
    assert done.returncode == 0, f"make release-images failed:\n{done.stdout}\n{done.stderr}"
    return tag


def forget_local(references: list[str]) -> None:
    """Untag what a test pulled or pushed; layers other images share stay."""
    if references:
        subprocess.run(["docker", "rmi", *references], capture_output=True)
