"""The controller's HTTP API against the real farm: what it refuses, and cancelling."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import tarfile
import time

import httpx
import pytest

from crossfarm.client.pack import pack

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"


def _upload(api: httpx.Client, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    response = api.put(f"/v1/sources/{digest}", content=data)
    assert response.status_code == 201, response.text
    return digest


@pytest.fixture
def api(farm):
    with httpx.Client(base_url=farm.controller_url, timeout=30) as client:
        yield client


def test_unsupported_target_gets_422_naming_the_supported_ones(api, crate):
    digest = _upload(api, pack(crate).data)
    response = api.post(
        "/v1/builds", json={"source": digest, "targets": ["riscv64gc-unknown-linux-gnu"]}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "UnsupportedTarget"
    assert body["fields"]["supported"] == ["aarch64-unknown-linux-gnu", X86]


def test_refused_cargo_argument_gets_422_with_the_alternative(api, crate):
    digest = _upload(api, pack(crate).data)
    response = api.post("/v1/builds", json={"source": digest, "targets": [X86],
                                            "cargo_args": ["--target-dir", "/tmp/x"]})
    assert response.status_code == 422
    assert "the farm chooses where outputs go" in response.json()["message"]


def test_unknown_request_field_is_refused(api, crate):
    digest = _upload(api, pack(crate).data)
    response = api.post("/v1/builds", json={"source": digest, "targets": [X86], "relase": True})
    assert response.status_code == 422


def test_build_of_a_source_never_uploaded_is_404(api):
    response = api.post("/v1/builds", json={"source": "0" * 64, "targets": [X86]})
    assert response.status_code == 404
    assert "PUT /v1/sources" in response.json()["message"]


def _tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def test_archive_with_a_parent_path_is_refused_and_not_stored(api):
    evil = tarfile.TarInfo("../escape.rs")
    evil.size = 2
    data = _tar_gz([(evil, b"hi")])
    digest = hashlib.sha256(data).hexdigest()
    response = api.put(f"/v1/sources/{digest}", content=data)
    assert response.status_code == 422
    assert "../escape.rs" in response.json()["message"]
    assert api.get(f"/v1/sources/{digest}").status_code == 404


def test_upload_whose_bytes_do_not_match_the_digest_is_refused(api, crate):
    data = pack(crate).data
    response = api.put(f"/v1/sources/{'a' * 64}", content=data)
    assert response.status_code == 422
    assert "sha256" in response.json()["message"]


def test_unknown_build_is_404(api):
    assert api.get("/v1/builds/b-0000000000000000").status_code == 404
    assert api.get("/v1/builds/not-an-id").status_code == 404


def _containers_of(job_id: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.crossfarm.job={job_id}"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_cancel_while_running_stops_the_container_and_publishes_nothing(api, crate):
    (crate / "build.rs").write_text(
        "fn main() { std::thread::sleep(std::time::Duration::from_secs(300)); }\n")
    digest = _upload(api, pack(crate).data)
    build = api.post("/v1/builds", json={"source": digest, "targets": [X86]}).json()
    job_id = build["jobs"][0]["job_id"]
    deadline = time.monotonic() + 180
    while not _containers_of(job_id) or api.get(f"/v1/builds/{build['build_id']}").json()[
            "state"] != "running":
        assert time.monotonic() < deadline, "the build never started"
        time.sleep(0.5)
    time.sleep(2)  # let the build step (not only the fetch step) get going

    cancelled_at = time.monotonic()
    response = api.post(f"/v1/builds/{build['build_id']}/cancel")
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    while _containers_of(job_id):
        assert time.monotonic() - cancelled_at < 10, "container still there 10 s after cancel"
        time.sleep(0.2)
    final = api.get(f"/v1/builds/{build['build_id']}").json()
    assert final["jobs"][0]["state"] == "cancelled"
    assert api.get(f"/v1/builds/{build['build_id']}/artifacts").json() == []
