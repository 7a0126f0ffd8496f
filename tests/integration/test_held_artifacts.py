"""An artifact is stored once per tenant, on the real farm: a rebuild whose binary did not
change names the object its tenant already stores instead of uploading it again, the CLI
still gets the right bytes, and another tenant's build of the very same crate uploads
its own copy (no tenant's build sees what another stores)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import FIXTURES
from polling import until

from crossfarm.shared import keys
from crossfarm.shared.storage import S3Store, StorageSettings

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"
BINARY = Path("target") / X86 / "debug" / "hello-c"


def _store(farm) -> S3Store:
    return S3Store(StorageSettings(endpoint_url=farm.s3_url, bucket="crossfarm",
                                   access_key="crossfarm", secret_key="crossfarm-local-secret"))


@pytest.fixture(scope="module")
def tokens(farm) -> dict[str, str]:
    """Two tenants new to this farm: nothing earlier in the session stored theirs."""
    with httpx.Client(base_url=farm.controller_url, headers=farm.auth, timeout=30) as api:
        issued = {name: api.post("/v1/admin/tokens", json={"tenant": name, "name": "ci"})
                  for name in ("held-acme", "held-globex")}
    assert all(reply.status_code == 201 for reply in issued.values())
    return {name: reply.json()["token"] for name, reply in issued.items()}


def _build(farm, crate: Path, token: str) -> tuple[dict, list[dict], str]:
    """A debug build through the CLI as the token's tenant: the build, its artifacts and
    the CLI's stderr (the build's log)."""
    result = subprocess.run(
        [sys.executable, "-m", "crossfarm.client", "build", "--target", X86, "--json"],
        cwd=crate, env=farm.env(CROSSFARM_TOKEN=token), capture_output=True, text=True,
        timeout=900)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    return document["build"], document["artifacts"], result.stderr


def _copy(tmp_path: Path, name: str) -> Path:
    crate = tmp_path / name
    shutil.copytree(FIXTURES / "hello-c", crate)
    return crate


def _artifact_objects(farm, build: dict) -> list[str]:
    return [key for key in _store(farm).list_keys(f"builds/{build['build_id']}/")
            if "/artifacts/" in key]


def test_a_rebuild_with_the_same_binary_uploads_nothing_and_another_tenant_gets_its_own(
        farm, tokens, tmp_path):
    acme, globex = tokens["held-acme"], tokens["held-globex"]
    first_crate = _copy(tmp_path, "first")
    first, _, first_log = _build(farm, first_crate, acme)
    assert "crossfarm: artifacts: 1 uploaded" in first_log
    [own] = _artifact_objects(farm, first)
    sha = hashlib.sha256((first_crate / BINARY).read_bytes()).hexdigest()
    # the worker notes the upload once the controller took the job's success, which the
    # CLI may see first
    note = keys.held_artifact_key("held-acme", sha)
    until(lambda: _store(farm).exists(note), "the worker's note of the stored artifact")

    # a one-line change elsewhere in a fresh clone: another source tree, the same binary
    again_crate = _copy(tmp_path, "again")
    answer = again_crate / "src" / "answer.c"
    answer.write_text(answer.read_text() + "\n/* a comment: the same object code */\n")
    again, artifacts, again_log = _build(farm, again_crate, acme)

    assert again["source"] != first["source"]
    [artifact] = artifacts
    assert artifact["sha256"] == sha, "the fixture's binary is expected to be reproducible"
    assert "crossfarm: artifacts: 0 uploaded (0 bytes), 1 already stored for this tenant, " \
           "not sent again" in again_log
    assert _artifact_objects(farm, again) == []  # nothing stored under the rebuild
    # the CLI downloaded the stored object into the fresh clone, checked, and it runs
    built = again_crate / BINARY
    assert hashlib.sha256(built.read_bytes()).hexdigest() == sha
    ran = subprocess.run([built], capture_output=True, text=True, check=True)
    assert ran.stdout.startswith("hello from x86_64: answer=")
    reply = httpx.get(artifact["url"], timeout=30)
    assert hashlib.sha256(reply.content).hexdigest() == sha
    assert own in reply.url.path

    # another tenant, the same crate: its own upload, under its own build
    other, other_artifacts, other_log = _build(farm, _copy(tmp_path, "other"), globex)
    assert other_artifacts[0]["sha256"] == sha
    assert "crossfarm: artifacts: 1 uploaded" in other_log
    assert "already stored" not in other_log
    assert len(_artifact_objects(farm, other)) == 1
