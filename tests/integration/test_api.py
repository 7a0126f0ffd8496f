"""The controller's HTTP API against the real farm: what it refuses, and cancelling."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from gate import gate, wait_at_gate
from polling import until

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"


def _upload(farm, crate: Path) -> str:
    """Send the crate's tree and blobs the way the CLI does; returns the tree digest."""
    with FarmClient(farm.controller_url, token=farm.client_token) as client:
        return send(client, scan(crate)).status.digest


def test_unsupported_target_gets_422_naming_the_supported_ones(farm, api, crate):
    digest = _upload(farm, crate)
    response = api.post(
        "/v1/builds", json={"source": digest, "targets": ["riscv64gc-unknown-linux-gnu"]}
    )
    assert response.status_code == 422
    body = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert body["type"] == "https://crossfarm.dev/problems/unsupported-target"
    assert body["supported"] == ["aarch64-unknown-linux-gnu", X86]


def test_refused_cargo_argument_gets_422_with_the_alternative(farm, api, crate):
    digest = _upload(farm, crate)
    response = api.post("/v1/builds", json={"source": digest, "targets": [X86],
                                            "cargo": {"cargo_args": ["--target-dir", "/tmp/x"]}})
    assert response.status_code == 422
    assert "the farm chooses where outputs go" in response.json()["detail"]


def test_unknown_request_field_is_refused(farm, api, crate):
    digest = _upload(farm, crate)
    response = api.post("/v1/builds", json={"source": digest, "targets": [X86], "relase": True})
    assert response.status_code == 422


def test_build_of_a_source_never_uploaded_is_404(api):
    response = api.post("/v1/builds", json={"source": "0" * 64, "targets": [X86]})
    assert response.status_code == 404
    assert "POST /v1/sources" in response.json()["detail"]


def test_tree_with_a_parent_path_is_refused_and_not_stored(api):
    data = b"fn main() {}\n"
    digest = hashlib.sha256(data).hexdigest()
    assert api.put(f"/v1/blobs/{digest}", content=data).status_code == 204
    tree = {"entries": [{"path": "../escape.rs", "kind": "file", "sha256": digest,
                         "size": len(data)}]}
    response = api.post("/v1/sources", json=tree)
    assert response.status_code == 422
    assert "../escape.rs" in response.json()["detail"]


def test_tree_naming_a_blob_never_uploaded_is_refused(api):
    tree = {"entries": [{"path": "src/main.rs", "kind": "file", "sha256": "b" * 64, "size": 3}]}
    response = api.post("/v1/sources", json=tree)
    assert response.status_code == 422
    assert "not uploaded yet" in response.json()["detail"]


def test_blob_whose_bytes_do_not_match_the_digest_is_refused_and_not_stored(api):
    response = api.put(f"/v1/blobs/{'a' * 64}", content=b"other bytes")
    assert response.status_code == 422
    assert "sha256" in response.json()["detail"]
    missing = api.post("/v1/blobs/missing", json={"digests": ["a" * 64]}).json()["missing"]
    assert missing == ["a" * 64]


def test_unknown_build_is_404(api):
    assert api.get("/v1/builds/b-0000000000000000").status_code == 404
    assert api.get("/v1/builds/not-an-id").status_code == 404


def _containers_of(job_id: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.crossfarm.job={job_id}"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_cancel_while_running_stops_the_container_and_publishes_nothing(farm, api, crate):
    gate(crate)  # never opened: only the cancel can end this build
    digest = _upload(farm, crate)
    build = api.post("/v1/builds", json={"source": digest, "targets": [X86]}).json()
    job_id = build["jobs"][0]["job_id"]
    wait_at_gate(job_id)  # the build step (not only the fetch step) runs

    response = api.post(f"/v1/builds/{build['build_id']}/cancel")
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    until(lambda: not _containers_of(job_id), "the container gone after the cancel")
    final = api.get(f"/v1/builds/{build['build_id']}").json()
    assert final["jobs"][0]["state"] == "cancelled"
    assert api.get(f"/v1/builds/{build['build_id']}/artifacts").json() == []
