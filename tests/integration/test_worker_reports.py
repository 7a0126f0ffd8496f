"""Forged worker reports against the real controller: only the worker holding a job's
lease (the secret its start was answered with) reports its outcome, and a manifest names
that attempt's own outputs. The forger has what any worker has, the worker token, and
what anyone sees, the holder's name. The build waits at a gate while the forgeries
arrive, then ends as its real worker says."""

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
#: a lease secret's shape (secrets.token_urlsafe(32)), not the one the holder was given
GUESS = "forgedLeaseForgedLeaseForgedLeaseForgedLea"


def _worker_auth(farm) -> dict[str, str]:
    """What a worker presents: the farm's worker token, when it has one."""
    token = farm.env().get("CROSSFARM_WORKER_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _report(api, farm, job_id: str, worker: str, attempt: int, artifacts=None, build=None,
            lease: str | None = GUESS, state: str = "succeeded"):
    """A finish report as a worker sends it; `lease` None leaves the lease out."""
    manifest = None if artifacts is None else {
        "build_id": build, "job_id": job_id, "target": X86, "attempt": attempt,
        "profile_dir": "debug", "artifacts": artifacts}
    lease_field = {} if lease is None else {"lease": lease}
    return api.post(f"/v1/jobs/{job_id}/finish", headers=_worker_auth(farm), json={
        "attempt": attempt, "worker": worker, **lease_field, "state": state,
        "exit_code": 0 if state == "succeeded" else 1, "manifest": manifest})


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
    # the holder's name, the right attempt, a manifest of the attempt's own keys: all a
    # forger can know, and still no lease
    unleased = _report(api, farm, job_id, holder, attempt, [_entry("hello-c", own)], build_id,
                       lease=None)
    fake_success = _report(api, farm, job_id, holder, attempt, [_entry("hello-c", own)],
                           build_id)
    fake_failure = _report(api, farm, job_id, holder, attempt, state="failed")
    climbing = _report(api, farm, job_id, holder, attempt,
                       [_entry("../../x", own.replace("hello-c", "../../x"))], build_id)
    foreign_key = _report(api, farm, job_id, holder, attempt,
                          [_entry("hello-c", f"builds/b-0000000000000000/{X86}/attempt-1/"
                                             "artifacts/hello-c")], build_id)

    assert (foreign_worker.status_code, stale.status_code) == (409, 409)
    assert "held by another worker" in foreign_worker.json()["detail"]
    assert "stale" in stale.json()["detail"]
    assert unleased.status_code == 422
    assert unleased.json()["errors"][0]["loc"][-1] == "lease"
    for forged in (fake_success, fake_failure, foreign_key):
        assert forged.status_code == 409
        assert forged.headers["content-type"] == "application/problem+json"
        assert "only the worker that started this attempt" in forged.json()["detail"]
        assert GUESS not in forged.text
    assert climbing.status_code == 422
    assert climbing.json()["errors"][0]["loc"][-1] == "name"
    job = api.get(f"/v1/builds/{build_id}").json()["jobs"][0]
    assert (job["state"], job["attempt"], job["worker"]) == ("running", attempt, holder)
    assert (job["exit_code"], job["reason"]) == (None, None)
    assert api.get(f"/v1/builds/{build_id}/artifacts").json() == []

    open_gate(job_id)
    final = until(lambda: (b := api.get(f"/v1/builds/{build_id}").json())["state"]
                  in ("succeeded", "failed", "cancelled") and b, "the build's end", 600)
    assert final["state"] == "succeeded"
    assert final["jobs"][0]["attempt"] == attempt  # the real worker's own report, not a re-run
    artifacts = api.get(f"/v1/builds/{build_id}/artifacts").json()
    assert [a["name"] for a in artifacts] == ["hello-c"]
    assert artifacts[0]["sha256"] != SHA  # the worker's manifest, not a forged one
