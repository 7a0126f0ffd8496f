"""The whole path, for real: CLI → controller → per-arch queue → builder container →
S3 → artifacts back in target/<triple>/<profile>/."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import httpx
import pytest
from conftest import WORKER_AMD64

from crossfarm.shared import keys
from crossfarm.shared.ids import BuildId
from crossfarm.shared.storage import S3Store, StorageSettings
from crossfarm.shared.wire import BuildView, Manifest
from crossfarm.worker.images import BUILD_UID
from crossfarm.worker.settings import WorkerSettings

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
#: ELF e_machine values (offset 18, little-endian)
ELF_MACHINE = {X86: 0x3E, ARM: 0xB7}


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


def _store(farm) -> S3Store:
    return S3Store(StorageSettings(endpoint_url=farm.s3_url, bucket="crossfarm",
                                   access_key="crossfarm", secret_key="crossfarm-local-secret"))


@pytest.fixture(scope="module")
def built(farm, tmp_path_factory):
    """One release build of hello-c for both targets through the CLI, shared by the checks."""
    import shutil
    import sys

    crate = tmp_path_factory.mktemp("e2e") / "hello-c"
    shutil.copytree(Path(__file__).parents[1] / "fixtures" / "hello-c", crate)
    result = subprocess.run(
        [sys.executable, "-m", "crossfarm.client", "build", "--target", X86, "--target", ARM,
         "--release", "--json"],
        cwd=crate, env=farm.env(), capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    return crate, BuildView.model_validate(document["build"]), result.stderr


def test_both_targets_succeed_and_land_where_cargo_puts_them(built):
    crate, build, _ = built
    assert build.state == "succeeded"
    for target in (X86, ARM):
        binary = crate / "target" / target / "release" / "hello-c"
        assert binary.is_file(), f"{binary} missing"
        assert _elf_machine(binary) == ELF_MACHINE[target]


def test_x86_binary_runs_here_and_prints_its_answer(built):
    crate, _, _ = built
    out = subprocess.run([crate / "target" / X86 / "release" / "hello-c"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "hello from x86_64: answer=42"


def test_aarch64_binary_runs_under_qemu_user_and_prints_its_answer(built):
    crate, _, _ = built
    out = subprocess.run(
        ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu",
         crate / "target" / ARM / "release" / "hello-c"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "hello from aarch64: answer=42"


def test_each_job_went_through_its_architectures_queue_and_names_worker_and_mode(built):
    _, build, _ = built
    jobs = {job.target: job for job in build.jobs}
    assert jobs[X86].queue.name == jobs[X86].consumed_from == "crossfarm.builds.amd64"
    # No arm64 worker here: cross-ok (the local farm's default) sends it to the queue of
    # workers with an arm64 cross toolchain, and the record says why.
    assert jobs[ARM].queue.name == jobs[ARM].consumed_from == "crossfarm.builds.arm64.cross"
    assert jobs[ARM].placed.startswith("cross: no arm64 worker online; cross-ok allows")
    assert jobs[X86].placed == "native: an amd64 worker is online"
    assert jobs[X86].mode == "native"
    assert jobs[ARM].mode == "cross"
    assert {job.worker for job in build.jobs} == {"worker-amd64"}
    assert all(job.exit_code == 0 and job.started_at and job.finished_at for job in build.jobs)


def test_manifest_sha256_matches_the_downloaded_bytes(farm, built):
    crate, build, _ = built
    store = _store(farm)
    for job in build.jobs:
        raw = store.get_bytes(keys.manifest_key(BuildId(build.build_id), job.target, job.attempt))
        manifest = Manifest.model_validate_json(raw)
        assert [a.name for a in manifest.artifacts] == ["hello-c"]
        local = crate / "target" / job.target / manifest.profile_dir / "hello-c"
        assert hashlib.sha256(local.read_bytes()).hexdigest() == manifest.artifacts[0].sha256
        assert local.stat().st_size == manifest.artifacts[0].size


def test_logs_show_cargo_output_per_target(built):
    _, _, stderr = built
    assert f"[{X86}" in stderr
    assert f"[{ARM}]" in stderr
    assert "Compiling hello-c" in stderr


def test_event_stream_resumes_after_last_event_id(farm, built):
    _, build, _ = built
    url = f"{farm.controller_url}/v1/builds/{build.build_id}/events"

    def ids_and_data(headers):
        with httpx.stream("GET", url, headers={**farm.auth, **headers}, timeout=30) as response:
            assert response.status_code == 200
            text = response.read().decode()
        frames = [f for f in text.split("\n\n") if f.startswith("id:")]
        return [(f.split("\n")[0][4:], f.split("data: ", 1)[1]) for f in frames]

    everything = ids_and_data({})
    assert json.loads(everything[-1][1])["kind"] == "end"
    cut = len(everything) // 2
    resumed = ids_and_data({"Last-Event-ID": everything[cut - 1][0]})
    assert resumed == everything[cut:]


def test_unchanged_resubmission_uploads_nothing(farm, built, cli):
    crate, _, _ = built
    result = cli(crate, "build", "--target", X86, "--release", "--detach")
    assert result.returncode == 0, result.stderr
    assert "nothing to upload, the farm has every file" in result.stderr


def test_compile_error_fails_the_build_with_cargos_message_and_nonzero_exit(farm, crate, cli):
    main = crate / "src" / "main.rs"
    main.write_text(main.read_text().replace("let answer", "let answer: u8"))
    result = cli(crate, "build", "--target", X86)
    assert result.returncode == 1
    assert "error[E0308]: mismatched types" in result.stderr
    assert "cargo build failed with exit code 101" in result.stdout
    assert not (crate / "target" / X86 / "debug" / "hello-c").exists()


def test_a_crate_without_a_lockfile_builds_and_the_build_user_writes_the_lock(farm, crate, cli):
    (crate / "Cargo.lock").unlink()
    result = cli(crate, "build", "--target", X86)
    assert result.returncode == 0, result.stderr
    assert "Locking" in result.stderr  # cargo fetch resolved and wrote Cargo.lock itself
    assert (crate / "target" / X86 / "debug" / "hello-c").is_file()



#: A build script that reports the sandbox it runs in (cgroup v2 paths, else v1).
SANDBOX_PROBE_RS = r"""
use std::fs::read_to_string;
fn first(paths: &[&str]) -> String {
    paths.iter().find_map(|p| read_to_string(p).ok()).unwrap_or_default().trim().to_string()
}
fn status(field: &str) -> String {
    let text = read_to_string("/proc/self/status").unwrap();
    let line = text.lines().find(|l| l.starts_with(field)).unwrap_or("");
    line[field.len()..].split_whitespace().collect::<Vec<_>>().join(" ")
}
fn main() {
    cc::Build::new().file("src/answer.c").compile("answer");
    let mut nets: Vec<String> = std::fs::read_dir("/sys/class/net").unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    nets.sort();
    let cpu = match read_to_string("/sys/fs/cgroup/cpu.max") {
        Ok(v2) => v2.trim().to_string(),
        Err(_) => format!("{} {}", first(&["/sys/fs/cgroup/cpu/cpu.cfs_quota_us"]),
                          first(&["/sys/fs/cgroup/cpu/cpu.cfs_period_us"])),
    };
    println!("cargo:warning=sandbox nets={}", nets.join(","));
    println!("cargo:warning=sandbox uid={}", status("Uid:"));
    println!("cargo:warning=sandbox capbnd={}", status("CapBnd:"));
    println!("cargo:warning=sandbox nonewprivs={}", status("NoNewPrivs:"));
    println!("cargo:warning=sandbox memory={}", first(&["/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes"]));
    println!("cargo:warning=sandbox pids={}", first(&["/sys/fs/cgroup/pids.max",
        "/sys/fs/cgroup/pids/pids.max"]));
    println!("cargo:warning=sandbox cpu={cpu}");
}
"""


def test_the_build_step_runs_offline_unprivileged_and_inside_its_limits(farm, crate, cli):
    (crate / "build.rs").write_text(SANDBOX_PROBE_RS)
    result = cli(crate, "build", "--target", X86)
    assert result.returncode == 0, result.stderr
    probe = dict(line.split("sandbox ", 1)[1].split("=", 1)
                 for line in result.stderr.splitlines() if "warning: hello-c" in line
                 and "sandbox " in line)
    assert probe["nets"] == "lo"  # network none: no interface but loopback
    assert probe["uid"].split() == [str(BUILD_UID)] * 4  # real, effective, saved, fs
    assert int(probe["capbnd"], 16) == 0  # every capability dropped
    assert probe["nonewprivs"] == "1"
    defaults = WorkerSettings.model_fields  # the shared worker keeps these two at default
    assert int(probe["memory"]) == defaults["build_memory_bytes"].default
    assert int(probe["pids"]) == defaults["build_pids"].default
    quota, period = (int(x) for x in probe["cpu"].split())
    assert quota / period == float(WORKER_AMD64["CROSSFARM_BUILD_CPUS"])
