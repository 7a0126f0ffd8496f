"""Two controllers, one PostgreSQL: each job is placed exactly once. Real PostgreSQL
(tests/conftest.py), Redis and SeaweedFS; two real controller processes started
together on an empty database (so their start-ups race to make it too), 200 builds
submitted across both from several threads while the placers of both send jobs. A
worker's heartbeat, posted as a worker would, gives the fleet room for every job; no
worker takes them, so every message sent stays in Redis to be counted."""

from __future__ import annotations

import base64
import json
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
from cryptography.fernet import Fernet
from polling import until
from sqlalchemy import create_engine, text

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send
from crossfarm.shared.wire import BuildRequest, WorkerHeartbeat

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "local"))
import farm as localfarm

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"
QUEUE = "crossfarm.builds.amd64"
BUILDS = 200
#: room for every job at once: the placers send all 200 as fast as they can claim them
SLOTS = 1000


@pytest.fixture
def two_controllers(tmp_path: Path, postgres) -> Iterator[tuple[localfarm.Farm, str, list[str]]]:
    """Redis, S3 and two controllers on one new PostgreSQL database."""
    database = postgres.database()
    running = localfarm.Farm(dir=tmp_path)
    urls = []
    try:
        running.start_redis()
        running.start_s3()
        shared = {
            "CROSSFARM_DATABASE_URL": database, "CROSSFARM_SECRETS_KEY":
            Fernet.generate_key().decode(), "CROSSFARM_DEFAULT_PLACEMENT": "native",
            "CROSSFARM_PLACER_INTERVAL_S": "0.2", "CROSSFARM_RESULT_CACHE": "false",
            # Nothing here may move a sent job on by itself (a re-send is a new attempt,
            # a second message by design): the worker stays online, its queue full.
            "CROSSFARM_LOST_AFTER_S": "3600", "CROSSFARM_RECONCILE_AFTER_S": "3600",
            "CROSSFARM_PICKUP_BOUND_S": "3600"}
        for name in ("controller-a", "controller-b"):
            port = localfarm.free_port()
            running._spawn(name, [sys.executable, "-m", "crossfarm.controller"],
                           running.env(CROSSFARM_PORT=str(port), **shared))
            urls.append(f"http://127.0.0.1:{port}")
        for name, url in zip(("controller-a", "controller-b"), urls, strict=True):
            until(lambda url=url: _healthy(url), f"{name} to serve", timeout=120)
        yield running, database, urls
    finally:
        running.stop()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _tiny(tmp_path: Path) -> Path:
    crate = tmp_path / "tiny"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text(
        '[package]\nname = "tiny"\nversion = "0.1.0"\nedition = "2021"\n')
    (crate / "src" / "main.rs").write_text('fn main() { println!("tiny"); }\n')
    return crate


def _heartbeat(url: str) -> None:
    info = WorkerHeartbeat(
        hostname="counted", arch="amd64", queues={QUEUE: "native"}, cpus=2,
        memory_bytes=8 * 1024**3, builder_image="crossfarm/builder:1", targets=[X86],
        version="0.1.0", concurrency=SLOTS, interval_s=3600)
    answer = httpx.post(f"{url}/v1/workers/counted/heartbeat", params={"fresh_start": True},
                        json=info.model_dump(mode="json"), timeout=30)
    assert answer.status_code == 200, answer.text


def _messages(redis_url: str) -> list[dict]:
    """Every build message in the queue: its job, attempt and the process that sent it."""
    found = []
    for raw in redis.Redis.from_url(redis_url).lrange(QUEUE, 0, -1):
        envelope = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        found.append({"job_id": args[0]["job_id"], "attempt": args[0]["attempt"],
                      "origin": envelope["headers"]["origin"]})
    return found


def _sent(database: str) -> int:
    engine = create_engine(database)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(text("SELECT count(*) FROM jobs WHERE sent_at IS NOT NULL")))
    finally:
        engine.dispose()


def test_two_controllers_on_one_postgresql_place_each_of_200_jobs_once(two_controllers,
                                                                       tmp_path):
    farm, database, urls = two_controllers
    _heartbeat(urls[0])
    crate = _tiny(tmp_path)
    clients = [FarmClient(url) for url in urls]
    source = send(clients[0], scan(crate)).status.digest
    request = BuildRequest(source=source, targets=[X86])

    def submit(n: int) -> str:
        # Alternate controllers: each submit wakes the placer of the one it reached.
        return str(clients[n % 2].submit(request).jobs[0].job_id)

    with ThreadPoolExecutor(8) as pool:
        submitted = list(pool.map(submit, range(BUILDS)))
    for client in clients:
        client.close()
    assert len(set(submitted)) == BUILDS

    until(lambda: _sent(database) == BUILDS, f"all {BUILDS} jobs sent", timeout=300)
    # Stop both, so no pass still under way sends after the count.
    farm.stop_process("controller-a")
    farm.stop_process("controller-b")

    messages = _messages(farm.redis_url)
    per_job = Counter(m["job_id"] for m in messages)
    twice = {job: n for job, n in per_job.items() if n > 1}
    assert not twice, f"jobs sent more than once: {twice}"
    assert sorted(per_job) == sorted(submitted)
    assert {m["attempt"] for m in messages} == {1}
    engine = create_engine(database)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT attempt, state, count(*) FROM jobs "
                                     "GROUP BY attempt, state")).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [(1, "queued", BUILDS)]
    senders = Counter(m["origin"] for m in messages)
    print(f"messages per sending controller process: {dict(senders)}")
    # Both placers took part: the claim, not luck, kept them from sending a job twice.
    assert len(senders) == 2, senders
