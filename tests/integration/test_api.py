"""The controller's HTTP API against the real farm: what it refuses, and cancelling."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from gate import gate, wait_at_gate
from polling import until

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send
from crossfarm.shared.errors import FarmError
from crossfarm.shared.wire import BuildRequest

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


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


def _tenant_token(api, tenant: str, name: str) -> str:
    issued = api.post("/v1/admin/tokens", json={"tenant": tenant, "name": name})
    assert issued.status_code == 201, issued.text
    return issued.json()["token"]


def test_another_tenant_can_neither_see_nor_cancel_a_build_and_the_next_build_is_clean(
        farm, api, crate, tmp_path):
    alice = FarmClient(farm.controller_url, token=_tenant_token(api, "acme-e2e", "alice"))
    bob_token = _tenant_token(api, "globex-e2e", "bob")
    bob = httpx.Client(base_url=farm.controller_url, timeout=30,
                       headers={"Authorization": f"Bearer {bob_token}"})
    gate(crate)  # alice's build holds at the gate until she cancels it
    with alice:
        sent = send(alice, scan(crate))
        build = alice.submit(BuildRequest(source=sent.status.digest, targets=[X86]))
        job_id = build.jobs[0].job_id
        wait_at_gate(job_id)
        assert build.submitter == "alice@acme-e2e"

        with bob:
            for path in ("", "/artifacts", "/events?follow=false"):
                assert bob.get(f"/v1/builds/{build.build_id}{path}").status_code == 404, path
            assert bob.post(f"/v1/builds/{build.build_id}/cancel").status_code == 404
            assert build.build_id not in bob.get("/v1/builds", params={"limit": 500}).text
            assert bob.get(f"/v1/sources/{sent.status.digest}").status_code == 404
            assert bob.post("/v1/builds", json={"source": sent.status.digest,
                                                "targets": [X86]}).status_code == 404
            digests = sorted({e.sha256 for e in scan(crate).tree.entries if e.sha256})
            missing = bob.post("/v1/blobs/missing", json={"digests": digests}).json()
            assert missing["missing"] == digests  # alice's files tell bob nothing
            fleet = bob.get("/v1/workers")
            assert job_id not in fleet.text
            assert sum(w["other_tenants_jobs"] for w in fleet.json()["workers"]) >= 1
            assert alice.build(build.build_id).state.value == "running"  # bob changed nothing

            # bob's own, normal build of the same crate runs clean beside and after it
            clean = tmp_path / "clean"
            shutil.copytree(FIXTURES / "hello-c", clean)
            with FarmClient(farm.controller_url, token=bob_token) as bob_client:
                own = send(bob_client, scan(clean)).status.digest
                next_build = bob_client.submit(BuildRequest(source=own, targets=[X86]))
                assert alice.cancel(build.build_id).state.value == "cancelled"
                until(lambda: not _containers_of(job_id), "alice's container gone")
                done = until(lambda: (view := bob_client.build(next_build.build_id))
                             .state.terminal and view, "bob's build to end", timeout=600)
                assert done.state.value == "succeeded", done.jobs[0].reason
                [artifact] = [a for a in bob_client.artifacts(next_build.build_id)
                              if a.name == "hello-c"]
                assert artifact.size > 0
        assert alice.artifacts(build.build_id) == []
        with pytest.raises(FarmError, match="HTTP 404"):
            alice.artifacts(next_build.build_id)


ARM = "aarch64-unknown-linux-gnu"


def _waiting_build(farm, api, crate) -> dict:
    """An arm64 build that only a native arm64 worker may take: this farm has none."""
    digest = _upload(farm, crate)
    response = api.post("/v1/builds", json={"source": digest, "targets": [ARM],
                                            "placement": "native"})
    assert response.status_code == 201, response.text
    return response.json()


def test_the_event_stream_refuses_an_id_it_never_sent_before_it_starts(farm, api, crate):
    build = _waiting_build(farm, api, crate)
    url = f"/v1/builds/{build['build_id']}/events"
    try:
        for bad in ("null", "garbage", f"{2**64}-0"):
            response = api.get(url, headers={"Last-Event-ID": bad})
            assert response.status_code == 422, (bad, response.text)
            assert "Last-Event-ID" in response.json()["detail"]
        with api.stream("GET", url, params={"follow": "false"}) as response:
            assert response.status_code == 200
            text = response.read().decode()
        assert text.split("\n\n")[1].startswith("id: 0-1\nevent: state\n")
    finally:
        api.post(f"/v1/builds/{build['build_id']}/cancel")


def test_the_listing_links_its_next_page_with_the_filters_kept(farm, api, crate):
    builds = [_waiting_build(farm, api, crate) for _ in range(3)]
    try:
        first = api.get("/v1/builds", params={"limit": 2, "state": "queued"})
        assert first.status_code == 200
        following = api.get(first.links["next"]["url"])
        listed = [b["build_id"] for b in first.json() + following.json()]
        assert listed[:3] == [b["build_id"] for b in reversed(builds)]
        assert len(listed) == len(set(listed))
        assert "state=queued" in first.links["next"]["url"]
    finally:
        for build in builds:
            api.post(f"/v1/builds/{build['build_id']}/cancel")
