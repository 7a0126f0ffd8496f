"""Fair share against the real farm: one tenant floods a queue, another still gets its
turn. Real Redis, SeaweedFS, controller (whose placer sends the jobs) and a worker of
concurrency 1; each tenant uploads and submits over the API with a token the operator
issued it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from conftest import plain_crate
from polling import until

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send
from crossfarm.shared.wire import BuildRequest, BuildView

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A crate with no dependencies: each build takes seconds."""
    return plain_crate(tmp_path, "tiny")


@pytest.fixture
def one_slot(farm, only) -> Iterator[None]:
    """The only worker taking jobs has one slot."""
    farm.start_worker("worker-one", CROSSFARM_CONCURRENCY="1", CROSSFARM_HEARTBEAT_S="1",
                      CROSSFARM_BUILD_CPUS="1")
    yield
    farm.stop_process("worker-one")


def _tenant(farm, api, tenant: str) -> FarmClient:
    issued = api.post("/v1/admin/tokens", json={"tenant": tenant, "name": "ci"})
    assert issued.status_code == 201, issued.text
    return FarmClient(farm.controller_url, token=issued.json()["token"])


def _submit(client: FarmClient, crate: Path, count: int) -> list[BuildView]:
    source = send(client, scan(crate)).status.digest
    request = BuildRequest(source=source, targets=[X86], placement="native")
    return [client.submit(request) for _ in range(count)]


def _started(api, build: BuildView) -> datetime | None:
    [job] = api.get(f"/v1/builds/{build.build_id}").json()["jobs"]
    return datetime.fromisoformat(job["started_at"]) if job["started_at"] else None


def test_a_tenant_flooding_a_queue_does_not_starve_another(farm, api, tiny, one_slot):
    with _tenant(farm, api, "acme-fair") as acme, _tenant(farm, api, "bolt-fair") as bolt:
        flood = _submit(acme, tiny, 20)
        pair = _submit(bolt, tiny, 2)
    try:
        until(lambda: all(_started(api, b) for b in pair), "bolt's two builds to start",
              timeout=600)
        second = max(_started(api, b) for b in pair)
        starts = sorted((s, tenant) for tenant, builds in (("acme", flood), ("bolt", pair))
                        for b in builds if (s := _started(api, b)) is not None)
        print("start order:", [tenant for _, tenant in starts])
        ahead = [b for b in flood if (s := _started(api, b)) is not None and s < second]
        # One slot, turns taken in fair order: acme, bolt, acme, bolt (acme's first job
        # may have been sent before bolt had submitted anything).
        assert len(ahead) <= 3, f"{len(ahead)} of acme's 20 builds started before bolt's 2nd"
        waiting = [b for b in flood if _started(api, b) is None]
        assert len(waiting) >= 15  # bolt's turns came long before the flood drained
    finally:
        for build in flood + pair:
            api.post(f"/v1/builds/{build.build_id}/cancel")
