"""Fair share against the real farm: one tenant floods a queue, another still gets its
turn. Real Redis, SeaweedFS, controller (whose placer sends the jobs) and a worker of
concurrency 1. The builds are recorded for their tenants through the submit use-case,
in this process, against the farm's own database, Redis and object store: the same
call the API makes once a token names the tenant."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from polling import until

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send
from crossfarm.controller.app import create_farm
from crossfarm.controller.builds import submit_build
from crossfarm.controller.farm import Farm
from crossfarm.controller.settings import ControllerSettings
from crossfarm.shared.ids import BuildId
from crossfarm.shared.wire import BuildRequest, BuildView

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A crate with no dependencies: each build takes seconds."""
    crate = tmp_path / "tiny"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text(
        '[package]\nname = "tiny"\nversion = "0.1.0"\nedition = "2021"\n')
    (crate / "Cargo.lock").write_text(
        'version = 3\n\n[[package]]\nname = "tiny"\nversion = "0.1.0"\n')
    (crate / "src" / "main.rs").write_text('fn main() { println!("tiny"); }\n')
    return crate


@pytest.fixture
def use_cases(farm) -> Iterator[Farm]:
    """The controller's use-cases in this process, on the farm's record and services."""
    settings = ControllerSettings(
        redis_url=farm.redis_url, s3_endpoint=farm.s3_url,
        database_url=f"sqlite:///{farm.dir / 'crossfarm.db'}")
    here = create_farm(settings)
    yield here
    here.store.close()


@pytest.fixture
def one_slot(farm, only) -> Iterator[None]:
    """The only worker taking jobs has one slot."""
    farm.start_worker("worker-one", CROSSFARM_CONCURRENCY="1", CROSSFARM_HEARTBEAT_S="1",
                      CROSSFARM_BUILD_CPUS="1")
    yield
    farm.stop_process("worker-one")


def _started(use_cases: Farm, build: BuildView) -> datetime | None:
    [job] = use_cases.store.builds.get(BuildId(build.build_id)).jobs
    return job.started_at


def test_a_tenant_flooding_a_queue_does_not_starve_another(farm, api, tiny, use_cases,
                                                           one_slot):
    with FarmClient(farm.controller_url, token=farm.client_token) as client:
        source = send(client, scan(tiny)).status.digest
    request = BuildRequest(source=source, targets=[X86], placement="native")
    flood = [submit_build(use_cases, request, tenant="acme") for _ in range(20)]
    pair = [submit_build(use_cases, request, tenant="bolt") for _ in range(2)]
    try:
        until(lambda: all(_started(use_cases, b) for b in pair), "bolt's two builds to start",
              timeout=600)
        second = max(_started(use_cases, b) for b in pair)
        starts = sorted((s, tenant) for tenant, builds in (("acme", flood), ("bolt", pair))
                        for b in builds if (s := _started(use_cases, b)) is not None)
        print("start order:", [tenant for _, tenant in starts])
        ahead = [b for b in flood if (s := _started(use_cases, b)) is not None and s < second]
        # One slot, turns taken in fair order: acme, bolt, acme, bolt (acme's first job
        # may have been sent before bolt had submitted anything).
        assert len(ahead) <= 3, f"{len(ahead)} of acme's 20 builds started before bolt's 2nd"
        waiting = [b for b in flood if _started(use_cases, b) is None]
        assert len(waiting) >= 15  # bolt's turns came long before the flood drained
    finally:
        for build in flood + pair:
            api.post(f"/v1/builds/{build.build_id}/cancel")
