"""Bombs against the real farm's hard limits: the job's disk, its log (a flood, one huge
line), its artifacts (too many, too big, forged cargo messages naming files outside the
target dir), and the build container's hardening. Each bomb runs on a worker with small
budgets; each test then asserts the failure reason, the worker's health, that nothing of
the bomb is left (container, volume, loop device, image file), and that a normal build
on the same worker succeeds. No verdict depends on timing: every wait is for a state.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from bombs import (
    BUILD_RS,
    DISK_BOMB,
    FORK_BOMB,
    HUGE_ARTIFACT,
    HUGE_LINE,
    LOG_FLOOD,
    MAIN_ERR,
    MAIN_OUT,
    forged,
    too_many_artifacts,
)
from conftest import FIXTURES
from polling import until

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send
from crossfarm.shared import keys
from crossfarm.shared.storage import S3Store, StorageSettings

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"
WORKER = "worker-limits"
DISK = 256 * 1024**2
LOG = 1024**2
LINE = 4096
ARTIFACT_COUNT = 3
ARTIFACT_BYTES = 64 * 1024**2
TMPFS = 16 * 1024**2
LIMITS = {
    "CROSSFARM_HEARTBEAT_S": "1", "CROSSFARM_BUILD_CPUS": "1",
    "CROSSFARM_JOB_DISK_BYTES": str(DISK), "CROSSFARM_LOG_MAX_BYTES": str(LOG),
    "CROSSFARM_LOG_LINE_MAX_BYTES": str(LINE),
    "CROSSFARM_ARTIFACT_MAX_COUNT": str(ARTIFACT_COUNT),
    "CROSSFARM_ARTIFACT_MAX_BYTES": str(ARTIFACT_BYTES),
    "CROSSFARM_BUILD_TMPFS_BYTES": str(TMPFS),
    "CROSSFARM_BUILD_PIDS": "256",
}

@pytest.fixture(scope="module")
def limited(farm):
    """The worker with small budgets every test here builds on."""
    proc = farm.start_worker(WORKER, **LIMITS)
    yield proc
    farm.stop_process(WORKER)


def _crate(tmp_path: Path, bomb: str) -> Path:
    crate = tmp_path / "hello-c"
    shutil.copytree(FIXTURES / "hello-c", crate)
    (crate / "build.rs").write_text(BUILD_RS.format(bomb=bomb))
    return crate


def _submit(farm, api, crate: Path, timeout_s: int | None = None,
            env: dict[str, str] | None = None) -> str:
    with FarmClient(farm.controller_url, token=farm.client_token) as client:
        source = send(client, scan(crate)).status.digest
    build = api.post("/v1/builds", json={"source": source, "targets": [X86],
                                         "timeout_s": timeout_s, "env": env or {}})
    assert build.status_code in (200, 201), build.text
    return build.json()["build_id"]


def _job(api, build_id: str) -> dict:
    return api.get(f"/v1/builds/{build_id}").json()["jobs"][0]


def _run(farm, api, crate: Path, timeout_s: int | None = None) -> tuple[dict, float]:
    """Build `crate` to its end; the job and the seconds from running to finished."""
    build_id = _submit(farm, api, crate, timeout_s)
    until(lambda: _job(api, build_id)["state"] != "queued", "the job to start", 300)
    started = time.monotonic()
    final = until(lambda: (j := _job(api, build_id))["state"] in ("succeeded", "failed",
                                                                    "cancelled") and j,
                  f"build {build_id} to finish", 600)
    final["build_id"] = build_id
    assert final["worker"] == WORKER
    return final, time.monotonic() - started


def _stored_log(farm, job: dict) -> bytes:
    store = S3Store(StorageSettings(endpoint_url=farm.s3_url, bucket="crossfarm",
                                    access_key="crossfarm",
                                    secret_key="crossfarm-local-secret"))
    return store.get_bytes(keys.log_key(job["build_id"], X86, job["attempt"]))


def _left_behind(farm, job_id: str) -> list[str]:
    """Whatever of the job is still on the machine: containers, volumes, loop devices and
    image files of its disk."""
    label = f"label=io.crossfarm.job={job_id}"
    things = subprocess.run(["docker", "ps", "-aq", "--filter", label], capture_output=True,
                            text=True, check=True).stdout.split()
    things += subprocess.run(["docker", "volume", "ls", "-q", "--filter", label],
                             capture_output=True, text=True, check=True).stdout.split()
    loops = json.loads(subprocess.run(["losetup", "--list", "--json"], capture_output=True,
                                      text=True, check=True).stdout or "{}")
    things += [d["back-file"] for d in loops.get("loopdevices", [])
               if job_id in (d.get("back-file") or "")]
    things += [str(p) for p in (farm.dir / WORKER).rglob("*.img")]
    return things


def _healthy_after(farm, api, limited, job: dict) -> None:
    """The worker lives, heartbeats after the bomb, and kept nothing of it."""
    assert limited.poll() is None, "the worker process died"
    failed_at = datetime.now(UTC)

    def beat_since() -> bool:
        worker = next(w for w in api.get("/v1/workers").json()["workers"]
                      if w["name"] == WORKER)
        return worker["state"] == "online" and (
            datetime.fromisoformat(worker["last_seen"]) > failed_at)

    until(beat_since, f"a heartbeat of {WORKER} after the bomb")
    until(lambda: not _left_behind(farm, job["job_id"]), "nothing of the bomb left")
    scratch = farm.dir / WORKER
    big = [p for p in scratch.rglob("*") if p.is_file() and "blobs" not in p.parts
           and p.stat().st_blocks * 512 > 1024**2]
    assert big == [], f"bytes of the bomb left in the worker's scratch dir: {big}"


def _normal_build_succeeds(farm, api, tmp_path: Path) -> None:
    crate = tmp_path / "normal"
    shutil.copytree(FIXTURES / "hello-c", crate)
    final, _ = _run(farm, api, crate)
    assert final["state"] == "succeeded", final


def _bomb(farm, api, limited, tmp_path, bomb: str, timeout_s: int | None = None
          ) -> tuple[dict, float]:
    final, seconds = _run(farm, api, _crate(tmp_path, bomb), timeout_s)
    print(f"{final['state']} after {seconds:.1f} s: {final.get('reason')}")
    return final, seconds


def test_a_disk_bomb_fails_at_the_jobs_disk_budget(farm, api, limited, only, tmp_path):
    final, _ = _bomb(farm, api, limited, tmp_path, DISK_BOMB)
    assert final["state"] == "failed"
    assert final["reason"].startswith(
        f"disk: the job's writable space of {DISK} bytes is full"), final["reason"]
    assert "CROSSFARM_JOB_DISK_BYTES" in final["reason"]
    _healthy_after(farm, api, limited, final)
    _normal_build_succeeds(farm, api, tmp_path)


def test_a_log_flood_stops_the_build_at_the_log_budget(farm, api, limited, only, tmp_path):
    final, _ = _bomb(farm, api, limited, tmp_path, LOG_FLOOD)
    assert final["state"] == "failed"
    assert final["reason"].startswith(
        f"log: the build's output passed the job's log budget of {LOG} bytes"), final["reason"]
    log = _stored_log(farm, final)
    assert len(log) < LOG + 64 * 1024  # the budget, and the worker's own few lines
    assert log.count(b"passed the job's log budget") >= 1
    stream = redis.Redis(port=farm.redis_port).memory_usage(
        keys.events_stream(final["build_id"]))
    print(f"log flood: stored log {len(log)} bytes, event stream {stream} bytes in Redis")
    assert stream is not None
    assert stream < 4 * LOG
    _healthy_after(farm, api, limited, final)
    _normal_build_succeeds(farm, api, tmp_path)


def test_one_huge_line_without_a_newline_is_cut_with_a_marker(farm, api, limited, only,
                                                              tmp_path):
    # 100 MiB with no newline: cut at the line budget as it comes, in linear time; the
    # build itself is fine and succeeds, its log holding the cut line.
    final, seconds = _bomb(farm, api, limited, tmp_path, HUGE_LINE)
    assert final["state"] == "succeeded", final
    log = _stored_log(farm, final).decode()
    [cut] = [line for line in log.splitlines() if line.startswith("xxxx")]
    assert cut == "x" * LINE + f" [crossfarm: line cut at {LINE} bytes; the rest of it was dropped]"
    print(f"a 100 MiB line: build done {seconds:.1f} s after it started")
    _healthy_after(farm, api, limited, final)


def test_a_fork_bomb_fails_at_the_pids_limit(farm, api, limited, only, tmp_path):
    # The pids limit stops the spawning; the children it made would keep cargo's pipes
    # open until the time limit, so the worker ends the build once the limit is reached.
    final, _ = _bomb(farm, api, limited, tmp_path, FORK_BOMB, timeout_s=600)
    assert final["state"] == "failed"
    assert final["reason"].startswith("pids: the build reached its limit of 256"), (
        final["reason"])
    assert "CROSSFARM_BUILD_PIDS" in final["reason"]
    _healthy_after(farm, api, limited, final)
    _normal_build_succeeds(farm, api, tmp_path)


def test_more_artifacts_than_the_count_limit_fail_the_build(farm, api, limited, only,
                                                            tmp_path):
    final, _ = _bomb(farm, api, limited, tmp_path, too_many_artifacts(ARTIFACT_COUNT + 2))
    assert final["state"] == "failed"
    assert final["reason"].startswith(
        f"artifacts: the build names more than {ARTIFACT_COUNT} artifacts"), final["reason"]
    _healthy_after(farm, api, limited, final)
    _normal_build_succeeds(farm, api, tmp_path)


def test_a_forged_message_naming_a_1_gib_sparse_file_is_refused_unread(farm, api, limited,
                                                                      only, tmp_path):
    final, _ = _bomb(farm, api, limited, tmp_path, HUGE_ARTIFACT)
    assert final["state"] == "failed"
    assert final["reason"].startswith(
        f"artifacts: /work/target/huge is {1 << 30} bytes, more than the"), final["reason"]
    assert "CROSSFARM_ARTIFACT_MAX_BYTES" in final["reason"]
    _healthy_after(farm, api, limited, final)
    _normal_build_succeeds(farm, api, tmp_path)


@pytest.mark.parametrize("path", ["/etc/passwd", "/work/src/Cargo.toml",
                                  "/work/target/../src/build.rs"])
def test_a_forged_message_naming_a_file_outside_the_target_dir_is_refused(
        farm, api, limited, only, tmp_path, path):
    final, _ = _bomb(farm, api, limited, tmp_path, MAIN_OUT + forged(path))
    assert final["state"] == "failed"
    assert final["reason"].startswith(
        f"artifacts: cargo's output names '{path}', outside the target dir /work/target"
    ), final["reason"]
    manifests = [k for k in S3Store(StorageSettings(
        endpoint_url=farm.s3_url, bucket="crossfarm", access_key="crossfarm",
        secret_key="crossfarm-local-secret")).list_keys(f"builds/{final['build_id']}/")
        if k.endswith("manifest.json")]
    assert manifests == []
    _healthy_after(farm, api, limited, final)


def test_the_build_container_is_read_only_but_work_tmp_and_home(farm, api, limited, only,
                                                                tmp_path):
    # Reports what it can write and what confines it, then builds normally.
    final, _ = _bomb(farm, api, limited, tmp_path, MAIN_ERR + r"""
        for dir in ["/", "/etc", "/usr/local", "/work", "/tmp", "/home/builder"] {
            let verdict = match std::fs::write(Path::new(dir).join("probe"), b"x") {
                Ok(()) => "writable".to_string(),
                Err(e) => format!("refused: {:?}", e.kind()),
            };
            writeln!(main_err, "HARDEN write {} {}", dir, verdict).unwrap();
        }
        let mut tmp = std::fs::File::create("/tmp/fill").unwrap();
        let mut filled = 0usize;
        let block = vec![1u8; 1 << 20];
        while tmp.write_all(&block).is_ok() { filled += block.len(); }
        std::fs::remove_file("/tmp/fill").unwrap();
        writeln!(main_err, "HARDEN tmp filled {}", filled).unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        for line in status.lines() {
            if line.starts_with("Seccomp:") || line.starts_with("NoNewPrivs:") {
                writeln!(main_err, "HARDEN {}", line.replace('\t', " ")).unwrap();
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for line in mounts.lines() {
            writeln!(main_err, "HARDEN mount {}", line).unwrap();
        }
    """)
    assert final["state"] == "succeeded", final
    log = _stored_log(farm, final).decode()
    said = [line.removeprefix("HARDEN ") for line in log.splitlines()
            if line.startswith("HARDEN ")]
    for dir in ["/", "/etc", "/usr/local"]:
        assert f"write {dir} refused: ReadOnlyFilesystem" in said or \
               f"write {dir} refused: PermissionDenied" in said, said
    for dir in ["/work", "/tmp", "/home/builder"]:
        assert f"write {dir} writable" in said, said
    filled = int(next(s for s in said if s.startswith("tmp filled ")).split()[-1])
    assert filled <= TMPFS
    assert "Seccomp: 2" in said  # the engine's default profile, in filter mode
    assert "NoNewPrivs: 1" in said
    mounts = {fields[4]: fields for line in said if line.startswith("mount ")
              for fields in [line.split()[1:]]}
    assert "ro" in mounts["/"][5].split(",")
    assert mounts["/work"][-3] == "ext4"
    assert mounts["/tmp"][-3] == "tmpfs"
    assert mounts["/home/builder"][-3] == "tmpfs"
    # No path of the host but the job's: besides kernel filesystems and tmpfs, the only
    # mounts are the root, the job's volume, the read-only deps volume, the read-only
    # copies of the image's /usr and /opt (where the worker makes them: image volumes)
    # and the three files the engine writes for every container.
    kernel = {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"}
    others = {point for point, fields in mounts.items() if fields[-3] not in kernel}
    assert others <= {"/", "/work", "/deps", "/usr", "/opt", "/etc/resolv.conf",
                      "/etc/hostname", "/etc/hosts"}, others
    for point in {"/deps", "/usr", "/opt"} & others:
        assert "ro" in mounts[point][5].split(","), mounts[point]
    _healthy_after(farm, api, limited, final)


#: A multi-line secret, as a PEM body or a key file would be.
SECRET = "-----BEGIN KEY-----\nhunter2-swordfish-0123\nsecond-line-abcdef\n-----END KEY-----"
#: Prints the secret in every form a log can carry it: verbatim (over several lines),
#: Rust's {:?} escape, JSON-style escapes, one cargo warning per line, and one piece a
#: line.
SECRET_PRINTER = MAIN_ERR + r"""
        let secret = std::env::var("CROSSFARM_TEST_SECRET").unwrap();
        writeln!(main_err, "verbatim: {}", secret).unwrap();
        writeln!(main_err, "debug: {:?}", secret).unwrap();
        writeln!(main_err, "json: \"{}\"", secret.replace('\n', "\\n")).unwrap();
        for line in secret.lines() {
            println!("cargo:warning=line: {}", line);
            writeln!(main_err, "{}", line).unwrap();
        }
    """


def test_a_secret_is_hidden_in_every_form_a_build_prints_it(farm, api, limited, only,
                                                           tmp_path):
    build_id = _submit(farm, api, _crate(tmp_path, SECRET_PRINTER),
                       env={"CROSSFARM_TEST_SECRET": SECRET})
    final = until(lambda: (j := _job(api, build_id))["state"] in ("succeeded", "failed") and j,
                  f"build {build_id} to finish", 600)
    final["build_id"] = build_id
    assert final["state"] == "succeeded", final
    log = _stored_log(farm, final).decode()
    stream = b"".join(
        value for _id, fields in redis.Redis(port=farm.redis_port).xrange(
            keys.events_stream(build_id)) for value in fields.values()).decode()
    assert "verbatim: " in log  # the build printed, and the log kept the rest of the line
    for piece in ("hunter2-swordfish-0123", "second-line-abcdef", "-----BEGIN KEY-----"):
        assert piece not in log, piece
        assert piece not in stream, piece
