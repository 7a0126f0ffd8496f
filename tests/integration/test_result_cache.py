"""The result cache on the real farm: the same inputs built twice by one tenant are served
the first build's artifacts with no worker involved; a changed input, another builder
image or another tenant misses and goes to a worker. The shared controller runs with the
cache off (conftest.py); this module restarts it with the cache on and back again."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from conftest import CONTROLLER, FIXTURES
from polling import until

from crossfarm.shared.wire import BuildView

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"
#: a builder image like the shared one but with another id (a label more, no new layer)
OTHER_IMAGE = "crossfarm/builder:result-cache-test"


def _restart_controller(farm, api: httpx.Client, settings: dict[str, str]) -> None:
    """Restart the controller with `settings`; wait until the shared worker's heartbeat
    has been answered by the new one, so placement (and the cache) sees it online."""
    farm.stop_process("controller")
    restarted = datetime.now(UTC)
    farm.start_controller(**settings)

    def renewed() -> bool:
        workers = api.get("/v1/workers").json()["workers"]
        return any(w["name"] == "worker-amd64" and w["state"] == "online"
                   and datetime.fromisoformat(w["last_seen"]) > restarted for w in workers)

    until(renewed, "a heartbeat answered by the restarted controller")


@pytest.fixture(scope="module")
def caching(farm) -> Iterator[httpx.Client]:
    """The farm's controller with the result cache on, for this module; an operator's
    API client."""
    with httpx.Client(base_url=farm.controller_url, headers=farm.auth, timeout=30) as api:
        _restart_controller(farm, api, {**CONTROLLER, "CROSSFARM_RESULT_CACHE": "true"})
        try:
            yield api
        finally:
            _restart_controller(farm, api, CONTROLLER)


def _token(api: httpx.Client, tenant: str) -> str:
    issued = api.post("/v1/admin/tokens", json={"tenant": tenant, "name": "ci"})
    assert issued.status_code == 201, issued.text
    return issued.json()["token"]


@pytest.fixture(scope="module")
def tenants(caching) -> dict[str, str]:
    """Two tenants new to this farm: nothing earlier in the session can serve them."""
    return {name: _token(caching, name) for name in ("cache-acme", "cache-globex")}


@pytest.fixture(scope="module")
def crate(tmp_path_factory) -> Path:
    """hello-c with a feature to switch on and a variable passed through (Cross.toml)."""
    crate = tmp_path_factory.mktemp("cache") / "hello-c"
    shutil.copytree(FIXTURES / "hello-c", crate)
    with (crate / "Cargo.toml").open("a") as manifest:
        manifest.write('\n[features]\nloud = []\n')
    (crate / "Cross.toml").write_text('[build.env]\npassthrough = ["CACHE_TEST_VALUE"]\n')
    return crate


def _cli(farm, crate: Path, token: str, *args: str, value: str = "one"
         ) -> tuple[float, subprocess.CompletedProcess[str]]:
    """The CLI as tenant `token`, with CACHE_TEST_VALUE set to `value`; its wall time."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "crossfarm.client", *args], cwd=crate, capture_output=True,
        text=True, timeout=900, env=farm.env(CROSSFARM_TOKEN=token, CACHE_TEST_VALUE=value))
    return time.monotonic() - started, result


def _build(farm, crate: Path, token: str, *flags: str, value: str = "one"
           ) -> tuple[float, BuildView, list[dict[str, object]], str]:
    """Build to the end: wall time, the build, its artifacts and the CLI's stderr."""
    took, result = _cli(farm, crate, token, "build", "--target", X86, "--json", *flags,
                        value=value)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    return took, BuildView.model_validate(document["build"]), document["artifacts"], \
        result.stderr


def _submitted(farm, crate: Path, token: str, *flags: str, value: str = "one") -> BuildView:
    """Submit without following (--detach): the build as the submit left it."""
    _, result = _cli(farm, crate, token, "build", "--target", X86, "--detach", "--json",
                     *flags, value=value)
    assert result.returncode == 0, result.stderr
    return BuildView.model_validate_json(result.stdout)


def _cancel(farm, token: str, build: BuildView) -> None:
    """A miss queued a job for a worker: cancel it, the test has seen what it needed."""
    reply = httpx.post(f"{farm.controller_url}/v1/builds/{build.build_id}/cancel",
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert reply.status_code == 200, reply.text


@pytest.fixture(scope="module")
def first(farm, crate, tenants) -> tuple[float, BuildView, list[dict[str, object]], str]:
    """The build every other one is compared with, built by a worker."""
    built = _build(farm, crate, tenants["cache-acme"])
    [job] = built[1].jobs
    assert (job.state, job.cached_from, job.worker) == ("succeeded", None, "worker-amd64")
    return built


def test_the_same_inputs_twice_are_served_from_the_cache_with_no_worker(
        farm, crate, tenants, first):
    built_s, built, built_artifacts, _ = first
    served_s, served, served_artifacts, stderr = _build(farm, crate, tenants["cache-acme"])

    [job] = served.jobs
    assert served.state == "succeeded"
    assert (job.state, job.cached_from) == ("succeeded", built.build_id)
    assert (job.worker, job.started_at, job.mode) == (None, None, None)
    # no worker ever heard of it: the worker logs every job it is handed
    worker_log = (farm.dir / "worker-amd64.log").read_text()
    assert built.jobs[0].job_id in worker_log
    assert job.job_id not in worker_log
    # the same artifacts, byte for byte
    assert [(a["name"], a["sha256"]) for a in served_artifacts] == [
        (a["name"], a["sha256"]) for a in built_artifacts]
    binary = crate / "target" / X86 / "debug" / "hello-c"
    assert hashlib.sha256(binary.read_bytes()).hexdigest() == next(
        a["sha256"] for a in served_artifacts if a["name"] == "hello-c")
    # the CLI kept the file it already had rather than download it again
    assert "target/x86_64-unknown-linux-gnu/debug/hello-c is already this artifact" in stderr
    print(f"\nbuilt by a worker: {built_s:.1f} s; served from the cache: {served_s:.1f} s")


def test_status_and_the_summary_table_say_cached(farm, crate, tenants, first):
    _, served, _, _ = _build(farm, crate, tenants["cache-acme"])
    _, status = _cli(farm, crate, tenants["cache-acme"], "status", served.build_id)
    assert status.returncode == 0, status.stderr
    header, row = status.stdout.splitlines()[1:3]
    assert header.split()[:3] == ["TARGET", "RESULT", "CACHE"]
    assert row.split()[:3] == [X86, "succeeded", "cached"]
    _, shown = _cli(farm, crate, tenants["cache-acme"], "status", first[1].build_id)
    assert shown.stdout.splitlines()[2].split()[:3] == [X86, "succeeded", "cold:0%"]


@pytest.mark.parametrize(("flags", "value"), [
    (["--features", "loud"], "one"),
    (["--release"], "one"),
    ([], "two"),
    (["--no-cache"], "one"),
], ids=["feature", "profile", "passthrough-value", "no-cache"])
def test_one_changed_input_misses_and_goes_to_a_worker(farm, crate, tenants, first, flags,
                                                       value):
    build = _submitted(farm, crate, tenants["cache-acme"], *flags, value=value)
    try:
        [job] = build.jobs
        assert job.cached_from is None
        assert job.state in ("queued", "running")
    finally:
        _cancel(farm, tenants["cache-acme"], build)


def test_a_changed_source_file_misses(farm, crate, tenants, first, tmp_path):
    changed = tmp_path / "hello-c"
    shutil.copytree(crate, changed, ignore=shutil.ignore_patterns("target"))
    (changed / "src" / "answer.c").write_text(
        (changed / "src" / "answer.c").read_text() + "\n/* changed */\n")
    build = _submitted(farm, changed, tenants["cache-acme"])
    try:
        assert build.jobs[0].cached_from is None
        assert build.jobs[0].state in ("queued", "running")
    finally:
        _cancel(farm, tenants["cache-acme"], build)


def test_another_tenant_misses_the_same_inputs(farm, crate, tenants, first):
    build = _submitted(farm, crate, tenants["cache-globex"])
    try:
        assert build.jobs[0].cached_from is None
        assert build.jobs[0].state in ("queued", "running")
    finally:
        _cancel(farm, tenants["cache-globex"], build)


@pytest.fixture
def other_image() -> Iterator[str]:
    """OTHER_IMAGE, made from the shared builder image with no registry: a committed
    container adds a label, so the image id differs and nothing else does."""
    made = subprocess.run(["docker", "create", "crossfarm/builder:1", "true"],
                          capture_output=True, text=True, check=True).stdout.strip()
    try:
        subprocess.run(["docker", "commit", "--change", "LABEL io.crossfarm.test=result-cache",
                        made, OTHER_IMAGE], capture_output=True, check=True)
    finally:
        subprocess.run(["docker", "rm", made], capture_output=True, check=True)
    yield OTHER_IMAGE
    subprocess.run(["docker", "rmi", OTHER_IMAGE], capture_output=True)


def test_workers_with_another_builder_image_miss(farm, crate, tenants, first, other_image,
                                                 only):
    farm.start_worker("worker-other-image", CROSSFARM_BUILDER_IMAGE=other_image,
                      CROSSFARM_HEARTBEAT_S="1")
    try:
        build = _submitted(farm, crate, tenants["cache-acme"])
        try:
            assert build.jobs[0].cached_from is None
            assert build.jobs[0].state in ("queued", "running")
        finally:
            _cancel(farm, tenants["cache-acme"], build)
    finally:
        farm.stop_process("worker-other-image")
