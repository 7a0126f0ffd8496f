"""`crossfarm test` and the crate's own toolchain, on the real farm: a worker with three
builder images (Debian's rustc-web 1.96 and rustc 1.63, and the builder with this
machine's rustup toolchain, CROSSFARM_TOOLCHAINS) announces all three; the shared worker
is drained for this module, so every job lands on it.

    crossfarm test             one failing test -> exit 1 and the counts of every suite
    crossfarm test --no-run    the test binaries come back and run here
    cross-ok aarch64 test      built with the cross toolchain, not run, and said so
    rust-toolchain.toml 1.63   built by the 1.63 image; its binary prints that rustc
    +1.96 / +1.70              the command line wins; an unknown one is refused unsent
    wasm32-unknown-unknown     built with 1.63 (its image has the wasm32 std)
    +<rustup's release>        built by rustup's rustc and linked by its own rust-lld
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import FIXTURES, WORKER_AMD64
from polling import until

from crossfarm.shared.wire import BuildView, FarmStats

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
WASM = "wasm32-unknown-unknown"
IMAGE_163 = "crossfarm/builder-1.63:1"
IMAGE_RUSTUP = "crossfarm/builder-rustup:1"  # the Makefile's BUILDER_RUSTUP_IMAGE


def _release(image: str) -> str:
    """The release of the rustc in `image` ("1.95.0"); fails the test when it is missing."""
    ran = subprocess.run(["docker", "run", "--rm", "--network", "none", image, "rustc", "-V"],
                         capture_output=True, text=True, timeout=120)
    if ran.returncode:
        pytest.fail(f"{image} is missing or its rustc does not run (make images): "
                    f"{ran.stderr.strip()}", pytrace=False)
    return ran.stdout.split()[1]


@pytest.fixture(scope="module")
def rustup_release() -> str:
    return _release(IMAGE_RUSTUP)


def _name(release: str) -> str:
    return ".".join(release.split(".")[:2])
WORKER = "worker-toolchains"


@pytest.fixture(scope="module")
def toolchain_worker(farm, rustup_release) -> Iterator[str]:
    """A worker building with both images; the shared worker drained meanwhile (a queue's
    workers must offer the same toolchains: see docs/architecture.md)."""
    present = subprocess.run(["docker", "image", "inspect", IMAGE_163],
                             capture_output=True).returncode == 0
    if not present:
        pytest.fail(f"{IMAGE_163} is missing (make images, or "
                    "deploy/images/builder-1.63/build-offline.sh)", pytrace=False)
    with httpx.Client(base_url=farm.controller_url, headers=farm.auth, timeout=30) as api:
        assert api.post("/v1/workers/worker-amd64/drain").status_code == 200
        until(lambda: farm.worker_state("worker-amd64") == "drained", "worker-amd64 drained")
        try:
            farm.start_worker(WORKER, **{
                **WORKER_AMD64,
                "CROSSFARM_TOOLCHAINS": f"1.96=crossfarm/builder:1,1.63={IMAGE_163},"
                                        f"{_name(rustup_release)}={IMAGE_RUSTUP}"})
            yield WORKER
        finally:
            if WORKER in farm.procs:
                farm.stop_process(WORKER)
            api.delete("/v1/workers/worker-amd64/drain")
            until(lambda: farm.worker_state("worker-amd64") == "online", "worker-amd64 back")


def _copy(fixture: str, tmp_path: Path) -> Path:
    dest = tmp_path / fixture
    shutil.copytree(FIXTURES / fixture, dest)
    return dest


def _view(result: subprocess.CompletedProcess[str]) -> BuildView:
    return BuildView.model_validate(json.loads(result.stdout)["build"])


def _stats(farm) -> FarmStats:
    return FarmStats.model_validate(
        httpx.get(f"{farm.controller_url}/v1/stats", headers=farm.auth).json())


def test_a_failing_test_fails_the_run_with_exit_1_and_the_counts_of_every_suite(
        farm, toolchain_worker, cli, tmp_path):
    crate = _copy("tested", tmp_path)

    result = cli(crate, "test", "--target", X86)

    assert result.returncode == 1, result.stderr
    assert f"{X86}: 3 passed, 1 failed, 1 ignored (2 test binaries)" in result.stdout
    # the run's own output streamed to the user
    assert "this test fails on purpose" in result.stderr
    assert "running on x86_64" in result.stderr
    assert "test result: FAILED. 2 passed; 1 failed; 1 ignored" in result.stderr
    assert "test tests::runs_on_a_64_bit_machine ... ok" in result.stderr
    assert "built by rustc 1.96.0" in result.stdout


def test_the_counts_and_the_rustc_are_in_the_jobs_record(farm, toolchain_worker, cli,
                                                         tmp_path):
    crate = _copy("tested", tmp_path)

    result = cli(crate, "test", "--target", X86, "--json")

    assert result.returncode == 1, result.stderr
    job = _view(result).jobs[0]
    assert job.worker == WORKER
    assert job.tests is not None
    assert (job.tests.passed, job.tests.failed, job.tests.ignored, job.tests.suites) == (
        3, 1, 1, 2)
    assert job.tests.ran
    assert job.reason == "tests failed: 1 of 4 (see the log above)"
    assert job.rustc is not None
    assert "release: 1.96.0" in job.rustc


def test_no_run_returns_the_test_binaries_which_run_here(farm, toolchain_worker, cli,
                                                         tmp_path):
    crate = _copy("tested", tmp_path)

    result = cli(crate, "test", "--no-run", "--target", X86, "--json")

    assert result.returncode == 0, result.stderr
    names = sorted(a["name"] for a in json.loads(result.stdout)["artifacts"])
    assert [n.rsplit("-", 1)[0] for n in names] == ["api", "tested"]
    job = _view(result).jobs[0]
    assert job.tests is not None
    assert not job.tests.ran
    unit = next(crate / "target" / X86 / "debug" / n for n in names if n.startswith("tested-"))
    ran = subprocess.run([str(unit), "--skip", "fails_on_purpose"], capture_output=True,
                         text=True, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "2 passed; 0 failed; 1 ignored" in ran.stdout


def test_cross_compiled_tests_are_built_not_run_and_the_run_says_so(
        farm, toolchain_worker, cli, tmp_path):
    crate = _copy("tested", tmp_path)

    result = cli(crate, "test", "--target", ARM, "--placement", "cross-ok")

    assert result.returncode == 0, result.stderr
    assert "tests built, not run: cross-compiled on this amd64 worker" in result.stderr
    assert f"{ARM}: tests built, not run (cross)" in result.stdout


def test_a_crate_pinned_to_1_63_is_built_by_the_1_63_image(farm, toolchain_worker, cli,
                                                           tmp_path):
    crate = _copy("pinned-1.63", tmp_path)

    result = cli(crate, "build", "--target", X86, "--json")

    assert result.returncode == 0, result.stderr
    assert "toolchain 1.63 from" in result.stderr
    job = _view(result).jobs[0]
    assert job.rustc is not None
    assert "release: 1.63.0" in job.rustc
    binary = crate / "target" / X86 / "debug" / "pinned"
    printed = subprocess.run([str(binary)], capture_output=True, text=True, timeout=30)
    assert printed.stdout.strip() == "built by rustc 1.63.0"


def test_plus_toolchain_on_the_command_line_wins_over_the_crates_file(
        farm, toolchain_worker, cli, tmp_path):
    crate = _copy("pinned-1.63", tmp_path)

    result = cli(crate, "+1.96", "build", "--target", X86)

    assert result.returncode == 0, result.stderr
    binary = crate / "target" / X86 / "debug" / "pinned"
    printed = subprocess.run([str(binary)], capture_output=True, text=True, timeout=30)
    assert printed.stdout.strip() == "built by rustc 1.96.0"


def test_rustups_toolchain_builds_with_its_own_rustc_and_links_with_its_rust_lld(
        farm, toolchain_worker, rustup_release, cli, tmp_path):
    crate = _copy("pinned-1.63", tmp_path)

    result = cli(crate, f"+{_name(rustup_release)}", "build", "--target", X86, "--json")

    assert result.returncode == 0, result.stderr
    job = _view(result).jobs[0]
    assert job.rustc is not None
    assert f"release: {rustup_release}" in job.rustc
    binary = crate / "target" / X86 / "debug" / "pinned"
    printed = subprocess.run([str(binary)], capture_output=True, text=True, timeout=30)
    assert printed.stdout.strip() == f"built by rustc {rustup_release}"
    # rustup's x86_64 Linux toolchains link with their own rust-lld (1.90 on), which
    # names itself in the binary's .comment section; gcc's ld.bfd writes no such line
    assert re.search(rb"Linker: LLD \d+", binary.read_bytes())


def test_an_unknown_toolchain_is_refused_before_upload_with_the_available_ones(
        farm, toolchain_worker, rustup_release, cli, tmp_path):
    crate = _copy("pinned-1.63", tmp_path)
    (crate / "rust-toolchain.toml").write_text('[toolchain]\nchannel = "1.70.0"\n')
    before = _stats(farm)

    result = cli(crate, "build", "--target", X86)

    assert result.returncode == 2
    available = sorted(["1.63 (1.63.0)", "1.96 (1.96.0)",
                        f"{_name(rustup_release)} ({rustup_release})"])
    assert ("toolchain '1.70.0' is not on this farm; available: " + ", ".join(available)
            in result.stderr)
    assert _stats(farm) == before  # nothing was uploaded


def test_the_api_refuses_an_unknown_toolchain_naming_the_available_ones(
        farm, toolchain_worker, rustup_release):
    request = {"source": "0" * 64, "targets": [X86], "cargo": {"toolchain": "nightly"}}
    with httpx.Client(base_url=farm.controller_url, headers=farm.auth, timeout=30) as api:
        refused = api.post("/v1/builds", json=request)

    assert refused.status_code == 422
    problem = refused.json()
    assert problem["type"].endswith("/unknown-toolchain")
    assert problem["available"] == sorted(["1.63", "1.96", _name(rustup_release)])


def test_wasm32_is_built_with_the_1_63_toolchain_on_an_architecture_with_capacity(
        farm, toolchain_worker, cli, tmp_path):
    crate = _copy("pinned-1.63", tmp_path)

    result = cli(crate, "build", "--target", WASM, "--json")

    assert result.returncode == 0, result.stderr
    job = _view(result).jobs[0]
    assert job.worker == WORKER
    assert job.placed is not None
    assert "runs on no host CPU" in job.placed
    module = crate / "target" / WASM / "debug" / "pinned.wasm"
    assert module.read_bytes()[:4] == b"\0asm"


def test_targets_lists_each_toolchain_and_where_each_target_goes(farm, toolchain_worker, cli,
                                                                 tmp_path):
    result = cli(tmp_path, "targets", "--json")

    assert result.returncode == 0, result.stderr
    toolchains = {t["name"]: t for t in json.loads(result.stdout)["toolchains"]}
    assert toolchains["1.63"]["releases"] == ["1.63.0"]
    old = {p["target"]: p for p in toolchains["1.63"]["targets"]}
    assert old[WASM]["arch"] is None
    assert old[WASM]["native"] == ["amd64"]
    assert ARM not in old  # Debian's 1.63 image has no aarch64 standard library
    new = {p["target"]: p for p in toolchains["1.96"]["targets"]}
    assert new[ARM]["cross"] == ["amd64"]
    assert toolchains["1.96"]["default"]
    table = cli(tmp_path, "targets")
    assert "1.96 (default)" in table.stdout
    assert WASM in table.stdout


def test_emulate_ok_runs_aarch64_tests_in_an_emulated_arm64_builder(
        farm, toolchain_worker, cli, tmp_path):
    arm64_image = "crossfarm/builder:1-arm64"  # the Makefile's ARM64_BUILDER_IMAGE
    if subprocess.run(["docker", "image", "inspect", arm64_image],
                      capture_output=True).returncode:
        pytest.fail(f"{arm64_image} is missing: make images", pytrace=False)
    crate = _copy("tested", tmp_path)
    with httpx.Client(base_url=farm.controller_url, headers=farm.auth, timeout=30) as api:
        # no cross toolchain online: emulation is what emulate-ok falls back to
        assert api.post(f"/v1/workers/{toolchain_worker}/drain").status_code == 200
        until(lambda: farm.worker_state(toolchain_worker) == "drained", "worker drained")
        try:
            farm.start_worker("worker-emu", CROSSFARM_EMULATE_ARCHES="arm64",
                              CROSSFARM_EMULATION_IMAGES=json.dumps({"arm64": arm64_image}),
                              CROSSFARM_HEARTBEAT_S="1")
            result = cli(crate, "test", "--target", ARM, "--placement", "emulate-ok",
                         "--timeout", "900", "--json", timeout=1800)
        finally:
            if "worker-emu" in farm.procs:
                farm.stop_process("worker-emu")
            api.delete(f"/v1/workers/{toolchain_worker}/drain")
            until(lambda: farm.worker_state(toolchain_worker) == "online", "worker back")

    assert result.returncode == 1, result.stderr  # one test fails on purpose
    [job] = _view(result).jobs
    assert (job.worker, job.mode.value) == ("worker-emu", "emulated")
    assert job.tests is not None
    assert (job.tests.passed, job.tests.failed, job.tests.ignored, job.tests.ran) == (
        3, 1, 1, True)
    assert "running on aarch64" in result.stderr
