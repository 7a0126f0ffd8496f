"""Tenants on the API: a tenant never sees another's builds, jobs, logs, artifacts,
sources or blobs (404, as for what does not exist, so ids tell nothing), the fleet
view counts other tenants' jobs without naming them, submitters are the token's, and
quotas refuse with 429. Real routes and a real SQLite store; fakes for the broker,
events and object store."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import tarfile

import httpx
import pytest
from farm_fakes import make_api

from crossfarm.controller.settings import TenantQuota
from crossfarm.controller.store.jobs import Outcome
from crossfarm.shared import keys
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import ArtifactEntry, Manifest, WorkerHeartbeat

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
DATA = b"fn main() {}\n"
BLOB = hashlib.sha256(DATA).hexdigest()
TREE = {"entries": [{"path": "src/main.rs", "kind": "file", "sha256": BLOB,
                     "size": len(DATA)}]}
OPERATOR = {"Authorization": "Bearer op-secret"}


class Tenants:
    """A farm with two tenants: alice (acme) and bob (globex) may submit, carol (acme)
    may read; alice has uploaded a source and submitted one build of it."""

    def __init__(self, api):
        self.api = api
        self.alice = self.issue("acme", "submit", "alice")
        self.bob = self.issue("globex", "submit", "bob")
        self.carol = self.issue("acme", "read", "carol")
        assert self.upload(self.alice).status_code == 204
        source = api.post("/v1/sources", json=TREE, headers=self.alice)
        assert source.status_code == 201, source.text
        self.source = source.json()["digest"]
        self.build = self.submit(self.alice).json()
        self.build_id = self.build["build_id"]

    def issue(self, tenant, role, name):
        reply = self.api.post("/v1/admin/tokens", headers=OPERATOR,
                              json={"tenant": tenant, "role": role, "name": name})
        return {"Authorization": f"Bearer {reply.json()['token']}"}

    def upload(self, who, data=DATA):
        return self.api.put(f"/v1/blobs/{hashlib.sha256(data).hexdigest()}", content=data,
                            headers=who)

    def submit(self, who, targets=(X86,), **fields):
        return self.api.post("/v1/builds", headers=who, json={
            "source": self.source, "targets": list(targets), **fields})


@pytest.fixture
def make_tenants(tmp_path):
    made = []

    def make(**settings):
        api = make_api(tmp_path / str(len(made)), worker_token="w-secret",
                       operator_token="op-secret", **settings)
        made.append(api)
        return Tenants(api)

    yield make
    for api in made:
        api.farm.store.close()


@pytest.fixture
def farm(make_tenants):
    return make_tenants()


BUILD_READS = ["", "/artifacts", "/events?follow=false"]


@pytest.mark.parametrize("path", BUILD_READS)
def test_a_build_is_read_by_its_tenant_and_the_operator_and_is_404_to_another(farm, path):
    url = f"/v1/builds/{farm.build_id}{path}"
    for owner in (farm.alice, farm.carol, OPERATOR):
        assert farm.api.get(url, headers=owner).status_code == 200, owner
    other = farm.api.get(url, headers=farm.bob)
    assert other.status_code == 404
    # the same answer as for a build that never existed: the id tells nothing
    never = farm.api.get(f"/v1/builds/b-0123456789abcdef{path}", headers=farm.bob)
    assert other.json()["detail"] == never.json()["detail"].replace(
        "b-0123456789abcdef", farm.build_id)


def test_a_builds_log_stream_is_its_tenants_only(farm):
    url = f"/v1/builds/{farm.build_id}/events?follow=false"
    stream = farm.api.get(url, headers=farm.alice)
    assert "event: state" in stream.text
    assert "event: end" in stream.text
    assert farm.api.get(url, headers=farm.bob).status_code == 404


def test_a_tenant_lists_only_its_own_builds_and_the_operator_every_one(farm):
    bobs = farm.api.post("/v1/sources", json=TREE, headers=farm.bob)
    assert bobs.status_code == 422  # bob never sent the blob himself
    assert farm.upload(farm.bob).status_code == 204
    assert farm.api.post("/v1/sources", json=TREE, headers=farm.bob).status_code == 201
    bob_build = farm.submit(farm.bob).json()["build_id"]

    def listed(who, **params):
        return [b["build_id"] for b in farm.api.get("/v1/builds", headers=who,
                                                     params=params).json()]

    assert listed(farm.alice) == [farm.build_id]
    assert listed(farm.carol) == [farm.build_id]
    assert listed(farm.bob) == [bob_build]
    assert set(listed(OPERATOR)) == {farm.build_id, bob_build}


def test_mine_lists_the_builds_of_the_tokens_name_whatever_the_client_declared(farm):
    declared = farm.submit(farm.alice, submitter="mallory").json()
    assert declared["submitter"] == "alice@acme"
    assert farm.build["submitter"] == "alice@acme"
    mine = farm.api.get("/v1/builds?mine=true", headers=farm.alice).json()
    assert {b["build_id"] for b in mine} == {farm.build_id, declared["build_id"]}
    assert farm.api.get("/v1/builds?mine=true", headers=farm.carol).json() == []
    assert farm.api.get("/v1/builds?submitter=mallory", headers=farm.alice).json() == []


def test_another_tenant_cannot_cancel_a_build_and_its_owner_can(farm):
    refused = farm.api.post(f"/v1/builds/{farm.build_id}/cancel", headers=farm.bob)
    assert refused.status_code == 404
    assert farm.api.farm.events.cancelled == []
    view = farm.api.get(f"/v1/builds/{farm.build_id}", headers=farm.alice).json()
    assert view["state"] == "queued"
    # a reader of the same tenant may look but not cancel
    assert farm.api.post(f"/v1/builds/{farm.build_id}/cancel",
                         headers=farm.carol).status_code == 403
    cancelled = farm.api.post(f"/v1/builds/{farm.build_id}/cancel", headers=farm.alice)
    assert cancelled.json()["state"] == "cancelled"


def test_artifacts_are_listed_for_the_owner_only(farm):
    job = farm.build["jobs"][0]
    _succeed(farm.api.farm, farm.build_id, job["job_id"], size=5)
    url = f"/v1/builds/{farm.build_id}/artifacts"
    [artifact] = farm.api.get(url, headers=farm.alice).json()
    assert artifact["name"] == "hello"
    assert farm.api.get(url, headers=farm.bob).status_code == 404


def test_blobs_another_tenant_sent_are_missing_until_this_tenant_sends_them_itself(farm):
    query = {"digests": [BLOB]}
    assert farm.api.post("/v1/blobs/missing", json=query, headers=farm.alice).json() == {
        "missing": []}
    assert farm.api.post("/v1/blobs/missing", json=query, headers=farm.bob).json() == {
        "missing": [BLOB]}
    # a wrong body is no proof of holding the file
    assert farm.upload(farm.bob, b"something else").status_code == 204
    assert farm.api.put(f"/v1/blobs/{BLOB}", content=b"forged",
                        headers=farm.bob).status_code == 422
    assert farm.api.post("/v1/blobs/missing", json=query, headers=farm.bob).json() == {
        "missing": [BLOB]}
    assert farm.upload(farm.bob).status_code == 204
    assert farm.api.post("/v1/blobs/missing", json=query, headers=farm.bob).json() == {
        "missing": []}
    # storage keeps one copy, one record of the blob
    assert farm.api.farm.storage.objects[keys.blob_key(BLOB)] == DATA


def test_blobs_in_a_pack_belong_to_the_tenant_that_sent_the_pack(farm):
    data = b"pub fn lib() {}\n"
    digest = hashlib.sha256(data).hexdigest()
    pack = _pack({digest: data})
    sent = farm.api.post("/v1/blobs/packs", content=pack, headers=farm.bob)
    assert sent.status_code == 201, sent.text
    query = {"digests": [digest]}
    assert farm.api.post("/v1/blobs/missing", json=query, headers=farm.bob).json() == {
        "missing": []}
    assert farm.api.post("/v1/blobs/missing", json=query, headers=farm.alice).json() == {
        "missing": [digest]}


def test_a_source_is_read_and_built_only_by_tenants_that_own_it(farm):
    url = f"/v1/sources/{farm.source}"
    assert farm.api.get(url, headers=farm.alice).status_code == 200
    assert farm.api.get(url, headers=OPERATOR).status_code == 200
    assert farm.api.get(url, headers=farm.bob).status_code == 404
    refused = farm.submit(farm.bob)
    assert refused.status_code == 404
    assert "no source tree" in refused.json()["detail"]
    # once bob sends the same files himself, the same tree is his too
    assert farm.upload(farm.bob).status_code == 204
    assert farm.api.post("/v1/sources", json=TREE, headers=farm.bob).status_code == 201
    assert farm.api.get(url, headers=farm.bob).status_code == 200
    assert farm.submit(farm.bob).status_code == 201


def test_the_fleet_view_counts_other_tenants_jobs_without_naming_them(farm):
    beat = WorkerHeartbeat(
        hostname="w1", arch="amd64", queues={"crossfarm.builds.amd64": "native"}, cpus=2,
        memory_bytes=2**30, builder_image="crossfarm/builder:1", targets=[X86],
        version="0", concurrency=2)
    job_id = farm.build["jobs"][0]["job_id"]
    beat = beat.model_copy(update={"running": [f"{job_id}-1"]})
    assert farm.api.post("/v1/workers/w1/heartbeat", content=beat.model_dump_json(),
                         headers={"Authorization": "Bearer w-secret",
                                  "Content-Type": "application/json"}).status_code == 200
    farm.api.farm.store.jobs.start(JobId(job_id), 1, worker="w1")

    def worker(who):
        [view] = farm.api.get("/v1/workers", headers=who).json()["workers"]
        return view["running_jobs"], view["other_tenants_jobs"]

    assert worker(farm.alice) == ([job_id], 0)
    [mine] = farm.api.get("/v1/workers", headers=farm.alice).json()["workers"]
    assert mine["info"]["running"] == [f"{job_id}-1"]
    assert worker(OPERATOR) == ([job_id], 0)
    assert worker(farm.bob) == ([], 1)
    assert job_id not in farm.api.get("/v1/workers", headers=farm.bob).text


def test_a_submit_over_the_queued_quota_is_429_naming_it(make_tenants):
    farm = make_tenants(tenant_quotas={"acme": TenantQuota(queued=2)})
    refused = farm.submit(farm.alice, targets=(X86, ARM))  # 1 queued + 2 > 2
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    body = refused.json()
    assert body["type"].endswith("/quota-exceeded")
    assert body.items() >= {"quota": "queued", "limit": 2, "used": 1}.items()
    assert "queued quota" in body["detail"]
    assert farm.submit(farm.alice).status_code == 201  # 1 + 1 fits
    # the quota is acme's: globex is not held to it
    assert farm.upload(farm.bob).status_code == 204
    farm.api.post("/v1/sources", json=TREE, headers=farm.bob)
    assert farm.submit(farm.bob, targets=(X86, ARM)).status_code == 201


def test_submits_at_once_over_the_api_never_pass_the_queued_quota(make_tenants):
    farm = make_tenants(tenant_quotas={"acme": TenantQuota(queued=5)})  # 1 queued already

    async def burst():
        transport = httpx.ASGITransport(app=farm.api._app)
        async with httpx.AsyncClient(transport=transport, base_url="http://farm") as client:
            return await asyncio.gather(*[client.post("/v1/builds", headers=farm.alice, json={
                "source": farm.source, "targets": [X86]}) for _ in range(12)])

    codes = sorted(reply.status_code for reply in asyncio.run(burst()))
    assert codes == [201] * 4 + [429] * 8
    assert farm.api.farm.store.usage.unended_jobs("acme") == 5


def test_an_upload_over_the_source_quota_is_429_and_nothing_is_recorded(make_tenants):
    farm = make_tenants(quota=TenantQuota(source_bytes=len(DATA) + 4))
    data = b"0123456789"
    refused = farm.upload(farm.alice, data)
    assert refused.status_code == 429
    assert refused.json()["quota"] == "source_bytes"
    digest = hashlib.sha256(data).hexdigest()
    assert farm.api.post("/v1/blobs/missing", json={"digests": [digest]},
                         headers=farm.alice).json() == {"missing": [digest]}
    # a blob the tenant already holds costs nothing again
    assert farm.upload(farm.alice).status_code == 204


def test_a_submit_while_over_the_artifact_quota_is_429(make_tenants):
    farm = make_tenants(tenant_quotas={"acme": TenantQuota(artifact_bytes=100)})
    _succeed(farm.api.farm, farm.build_id, farm.build["jobs"][0]["job_id"], size=101)
    refused = farm.submit(farm.alice)
    assert refused.status_code == 429
    assert refused.json()["quota"] == "artifact_bytes"
    assert farm.api.farm.store.usage.artifact_bytes("acme") == 101
    assert farm.api.farm.store.usage.artifact_bytes("globex") == 0


def _succeed(farm, build_id, job_id, size):
    farm.store.jobs.start(JobId(job_id), 1, worker="w1")
    manifest = Manifest(
        build_id=BuildId(build_id), job_id=JobId(job_id), target=X86, attempt=1,
        profile_dir="debug", artifacts=[ArtifactEntry(
            name="hello", size=size, sha256="0" * 64,
            key=keys.artifact_key(BuildId(build_id), X86, 1, "hello"))])
    farm.store.jobs.finish(JobId(job_id), 1, Outcome(BuildState.SUCCEEDED, exit_code=0,
                                                     manifest=manifest))


def _pack(blobs):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for digest, data in blobs.items():
            info = tarfile.TarInfo(digest)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue())
