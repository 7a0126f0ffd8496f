"""Typed worker settings, read from CROSSFARM_* environment variables by a factory."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from crossfarm.shared.arch import Arch
from crossfarm.shared.settings import FarmSettings


class WorkerSettings(FarmSettings):
    """Everything a worker needs; the defaults are the single-machine farm's."""

    controller_url: str = "http://127.0.0.1:8700"
    worker_token: str | None = None
    visibility_timeout_s: int = Field(default=8 * 3600, ge=5)
    worker_name: str = Field(default_factory=socket.gethostname)
    #: other architectures whose queues this worker also serves, with its cross toolchain
    cross_arches: Annotated[list[Arch], NoDecode] = Field(default_factory=list)
    #: other architectures this worker builds under emulation (binfmt + QEMU), each with
    #: a builder image of that architecture (CROSSFARM_EMULATION_IMAGES='{"arm64": "…"}')
    emulate_arches: Annotated[list[Arch], NoDecode] = Field(default_factory=list)
    emulation_images: dict[str, str] = Field(default_factory=dict)
    concurrency: int = Field(default=1, ge=1, le=64)
    #: free-form labels shown in the fleet (CROSSFARM_LABELS='{"rack": "r1"}')
    labels: dict[str, str] = Field(default_factory=dict)
    heartbeat_s: float = Field(default=5.0, gt=0)
    #: where the worker serves /healthz and /readyz (worker/health.py): loopback by
    #: default; the Helm chart and compose set 0.0.0.0 for their probes. Port 0: off
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=8701, ge=0, le=65535)
    builder_image: str = "crossfarm/builder:1"
    #: toolchain name -> builder image, the first the default for builds that name none
    #: (CROSSFARM_TOOLCHAINS="1.96=crossfarm/builder:1,1.63=crossfarm/builder-1.63:1");
    #: empty: the one toolchain of builder_image, named by its rustc's release ("1.96")
    toolchains: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    #: the worker's shared dependency volume: crates checked against Cargo.lock's sha256,
    #: written by the worker only, mounted read-only into builds
    deps_volume: str = "crossfarm-deps"
    #: where the worker downloads crates.io packages (<url>/<name>/<name>-<version>.crate)
    registry_url: str = "https://static.crates.io/crates"
    max_crate_bytes: int = Field(default=64 * 1024**2, ge=1024)
    build_cpus: float = Field(default_factory=lambda: float(os.cpu_count() or 1), gt=0)
    build_memory_bytes: int = Field(default=8 * 1024**3, ge=256 * 1024**2)
    build_pids: int = Field(default=4096, ge=64)
    #: the hard budget of a job's writable space (/work: source, target dir, cargo home),
    #: a loop-mounted ext4 filesystem of this size; 0: no limit (a plain volume)
    job_disk_bytes: int = Field(default=20 * 1024**3, ge=0)
    #: warm target dirs (worker/warm.py): the bytes all of them may hold on this worker
    #: together, least recently used dropped first; 0: off, every build is cold. They
    #: sit outside the job disk, so a worker with one (CROSSFARM_JOB_DISK_BYTES > 0)
    #: builds cold: a target dir in a warm volume would escape the job's hard budget
    warm_bytes: int = Field(default=0, ge=0)
    #: the compile cache (worker/compile_cache.py): sccache as RUSTC_WRAPPER, its cache of
    #: each (tenant, project, target, profile, builder image) kept in the object store,
    #: at most this many bytes of files each (sccache is told 90% of it and evicts; a
    #: cache the build left bigger is not stored). 0: off
    compile_cache_bytes: int = Field(default=0, ge=0, le=64 * 1024**3)
    #: the size of each tmpfs of a build container (/tmp and the build user's HOME); its
    #: pages also count against the container's memory limit
    build_tmpfs_bytes: int = Field(default=512 * 1024**2, ge=1024**2)
    #: at most this many artifacts per job, of at most this many bytes together
    artifact_max_count: int = Field(default=256, ge=1)
    artifact_max_bytes: int = Field(default=4 * 1024**3, ge=1)
    #: a job's log (the build's output) past this many bytes fails the build; a line
    #: longer than log_line_max_bytes is cut there, with a marker
    log_max_bytes: int = Field(default=32 * 1024**2, ge=4096)
    log_line_max_bytes: int = Field(default=64 * 1024, ge=256)
    #: the stall watchdog (worker/stall.py): a build step that prints nothing and uses
    #: next to no CPU time (under 1% of a core) for this many seconds is stopped and its
    #: job fails as stalled, well before its time limit (qemu-user hangs after a fork
    #: under emulation now and then). 0: off
    stall_s: float = Field(default=600, ge=0)
    #: the builder images' /usr and /opt copied once into read-only volumes and mounted
    #: over them in builds (worker/image_volumes.py): "auto" where the engine's storage
    #: driver runs in user space (fuse-overlayfs), "on", "off"
    image_volumes: Literal["auto", "on", "off"] = "auto"
    #: a CA bundle for crate downloads and Cargo.lock generation, for registries behind a
    #: TLS-inspecting proxy
    ca_bundle: Path | None = None
    scratch_dir: Path = Path(".crossfarm/worker")
    #: the source blob cache's budget: least recently used blobs beyond it are deleted
    blob_cache_bytes: int = Field(default=4 * 1024**3, ge=0)
    #: how long a storage step (source download, artifact upload) is retried with backoff
    #: while the object store is unreachable, before the job fails with a storage error
    storage_retry_s: float = Field(default=120, ge=0, le=3600)

    #: the image git sources are fetched in (deploy/images/fetcher), with no network of
    #: its own: its only way out is the worker's egress proxy (worker/egress.py); empty:
    #: this worker fetches none
    fetcher_image: str = "crossfarm/fetcher:1"
    #: networks the fetcher may reach though they are not public (a self-hosted git
    #: server), as CIDRs: CROSSFARM_GIT_ALLOW_NETWORKS=10.1.0.0/16,192.168.5.7
    git_allow_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: where the egress proxies' sockets are made, mounted into fetcher containers: it must
    #: be the same path on the Docker host (default: <scratch_dir>/egress)
    egress_dir: Path | None = None
    #: a fetch that receives more than this is cut off
    git_fetch_max_bytes: int = Field(default=2 * 1024**3, ge=1024**2)
    git_fetch_memory_bytes: int = Field(default=1024**3, ge=64 * 1024**2)

    @field_validator("git_allow_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for text in value:
                try:
                    ipaddress.ip_network(str(text), strict=False)
                except ValueError:
                    raise ValueError(f"CROSSFARM_GIT_ALLOW_NETWORKS: {text!r} is not an "
                                     "address or a CIDR network (10.1.0.0/16)") from None
        return value

    @field_validator("toolchains", mode="before")
    @classmethod
    def _parse_toolchains(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for part in (p.strip() for p in value.split(",") if p.strip()):
            name, _, image = part.partition("=")
            name, image = name.strip(), image.strip()
            if not name or not image:
                raise ValueError(f"CROSSFARM_TOOLCHAINS: {part!r} is not NAME=IMAGE "
                                 "(e.g. 1.63=crossfarm/builder-1.63:1)")
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
                raise ValueError(f"CROSSFARM_TOOLCHAINS: toolchain name {name!r} may hold "
                                 "only letters, digits, '.', '_' and '-'")
            if name in pairs:
                raise ValueError(f"CROSSFARM_TOOLCHAINS names {name!r} twice")
            pairs[name] = image
        return pairs

    @field_validator("cross_arches", "emulate_arches", mode="before")
    @classmethod
    def _parse_arches(cls, value: object) -> object:
        if isinstance(value, str):
            return [Arch.parse(part) for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _images_for_emulation(self) -> WorkerSettings:
        missing = [a.value for a in self.emulate_arches if a.value not in self.emulation_images]
        if missing:
            raise ValueError(f"CROSSFARM_EMULATE_ARCHES names {missing} but "
                             "CROSSFARM_EMULATION_IMAGES has no builder image for them")
        return self

    @field_validator("job_disk_bytes")
    @classmethod
    def _disk_fits_a_filesystem(cls, value: int) -> int:
        if 0 < value < 32 * 1024**2:
            raise ValueError("CROSSFARM_JOB_DISK_BYTES must be 0 (no limit) or at least "
                             "32 MiB (an ext4 filesystem and a build's source need that)")
        return value

    @field_validator("compile_cache_bytes")
    @classmethod
    def _cache_holds_something(cls, value: int) -> int:
        if 0 < value < 16 * 1024**2:
            raise ValueError("CROSSFARM_COMPILE_CACHE_BYTES must be 0 (off) or at least "
                             "16 MiB (one crate's compiled outputs can take that)")
        return value

    @field_validator("stall_s")
    @classmethod
    def _stall_spans_samples(cls, value: float) -> float:
        if 0 < value < 5:
            raise ValueError("CROSSFARM_STALL_S must be 0 (off) or at least 5 seconds (the "
                             "watchdog samples a build about once a second)")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _bundle_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"CROSSFARM_CA_BUNDLE {value} is not a readable file")
        return value

    def hostname(self) -> str:
        return socket.gethostname()


def load_settings() -> WorkerSettings:
    """Build the settings from the environment; call it at start-up, never at import."""
    return WorkerSettings()
