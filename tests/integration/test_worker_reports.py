"""Forged worker reports against the real controller: only the worker holding a job's
lease reports its outcome, and a manifest names that attempt's own outputs. The build
waits at a gate while the forgeries arrive, then ends as its real worker says."""

from __future__ import annotations

from pathlib import Path

import pytest
from gate import gate, open_gate, wait_at_gate
from polling import until

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send
from crossfarm.shared import keys
from crossfarm.shared.ids import BuildId

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"
SHA = "ab" * 32


def _worker_auth(farm) -> dict[str, str]:
    """What a worker presents: the farm's worker token, when it has one."""
    token = farm.env().get("CROSSFARM_WORKER_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _report(api, farm, job_id: str, worker: str, attempt: int, artifacts=None, build=None):
    manifest = None if artifacts is None else {
        "build_id": build, "job_id": job_id, "target": X86, "attempt": attempt,
        "profile_dir": "debug", "artifacts": artifacts}
    return api.post(f"/v1/jobs/{job_id}/finish", headers=_worker_auth(farm), json={
        "attempt": attempt, "worker": worker, "state": "succeeded", "exit_code": 0,
        "manifest": manifest})


def _entry(name: str, key: str) -> dict[str, object]:
    return {"name": name, "size": 3, "sha256": SHA, "key": key}


def test_forged_reports_are_refused_and_the_real_worker_still_ends_the_build(
        farm, api, crate: Path):
    gate(crate)
    with FarmClient(farm.controller_url, token=farm.client_token) as client:
        digest = send(client, scan(crate)).status.digest
    build = api.post("/v1/builds", json={"source": digest, "targets": [X86]}).json()
    build_id, job_id = build["build_id"], build["jobs"][0]["job_id"]
    wait_at_gate(job_id)
    job = api.get(f"/v1/builds/{build_id}").json()["jobs"][0]
    holder, attempt = job["worker"], job["attempt"]
    own = keys.artifact_key(BuildId(build_id), X86, attempt, "hello-c")

    foreign_worker = _report(api, farm, job_id, "mallory", attempt, [], build_id)
    stale = _report(api, farm, job_id, holder, attempt + 1, [], build_id)
    climbing = _report(api, farm, job_id, holder, attempt,
                       [_entry("../../x", own.replace("hello-c", "../../x"))], build_id)
    foreign_key = _report(api, farm, job_id, holder, attempt,
                          [_entry("hello-c", f"builds/b-0000000000000000/{X86}/attempt-1/"
                                             "artifacts/hello-c")], build_id)

    assert (foreign_worker.status_code, stale.status_code) == (409, 409)
    assert "held by another worker" in foreign_worker.json()["detail"]
    assert "stale" in stale.json()["detail"]
    assert climbing.status_code == 422
    assert climbing.headers["content-type"] == "application/problem+json"
    assert climbing.json()["errors"][0]["loc"][-1] == "name"
    assert foreign_key.status_code == 422
    assert "not under the attempt's own prefix" in foreign_key.json()["detail"]
    assert api.get(f"/v1/builds/{build_id}").json()["jobs"][0]["state"] == "running"

    open_gate(job_id)
    final = until(lambda: (b := api.get(f"/v1/builds/{build_id}").json())["state"]
                  in ("succeeded", "failed", "cancelled") and b, "the build's end", 600)
    assert final["state"] == "succeeded"
    names = [a["name"] for a in api.get(f"/v1/builds/{build_id}/artifacts").json()]
    assert names
    assert "../../x" not in names
