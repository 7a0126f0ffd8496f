"""Warm target dirs on a real worker, with real cargo: a one-line change recompiles only
the crate it is in (cargo's own JSON messages say which units were fresh), the binary
does what its source says, a dir over the worker's budget goes, and two builds of one
project at once each build correctly."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
from conftest import FIXTURES
from polling import until

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"
WARM = {"CROSSFARM_JOB_DISK_BYTES": "0", "CROSSFARM_HEARTBEAT_S": "1",
        "CROSSFARM_BUILD_CPUS": "1", "CROSSFARM_CONCURRENCY": "2"}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A fresh copy of a two-crate workspace: `app` (a binary) uses `greet` (a library)."""
    dest = tmp_path / "warm-ws"
    shutil.copytree(FIXTURES / "warm-ws", dest)
    return dest


@pytest.fixture
def warm_worker(farm, only) -> Iterator[str]:
    """The one worker taking jobs, with warm target dirs on (the shared one is drained)."""
    farm.start_worker("worker-warm", CROSSFARM_WARM_BYTES=str(4 * 1024**3), **WARM)
    try:
        yield "worker-warm"
    finally:
        farm.stop_process("worker-warm")
        _drop_warm_dirs(farm, "worker-warm")


def _warm_volumes(worker: str) -> list[str]:
    return subprocess.run(["docker", "volume", "ls", "-q", "--filter",
                           f"label=io.crossfarm.warm={worker}"],
                          capture_output=True, text=True, check=True).stdout.split()


def _drop_warm_dirs(farm, worker: str) -> None:
    """What a test's worker kept between its jobs goes with the test."""
    for volume in _warm_volumes(worker):
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)
    shutil.rmtree(farm.dir / worker / "warm", ignore_errors=True)


def _build(cli: Callable[..., subprocess.CompletedProcess[str]], ws: Path
           ) -> tuple[str, float]:
    """Build `ws` with the CLI; returns the build's log and its seconds on the worker."""
    log, build = _build_view(cli, ws)
    [job] = build["jobs"]
    return log, _seconds(job)


def _build_view(cli: Callable[..., subprocess.CompletedProcess[str]], ws: Path
                ) -> tuple[str, dict]:
    """Build `ws` with the CLI; returns the build's log and the build as `--json` shows it."""
    result = cli(ws, "build", "--target", X86, "--json")
    assert result.returncode == 0, result.stderr
    return result.stderr, json.loads(result.stdout)["build"]


def _cache_cell(cli: Callable[..., subprocess.CompletedProcess[str]], ws: Path,
                build_id: str) -> str:
    """The CACHE column of `crossfarm status` for the build's one job."""
    shown = cli(ws, "status", build_id)
    assert shown.returncode == 0, shown.stderr
    header, row = shown.stdout.splitlines()[1:3]
    assert header.split()[2] == "CACHE"
    return row.split()[2]


def _seconds(job: dict) -> float:
    started, finished = (datetime.fromisoformat(job[k]) for k in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


def _run(ws: Path) -> str:
    binary = ws / "target" / X86 / "debug" / "app"
    return subprocess.run([binary], capture_output=True, text=True, check=True).stdout.strip()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_a_one_line_change_on_a_warm_worker_recompiles_only_the_changed_crate(
    warm_worker, workspace, cli
):
    first, cold_s = _build(cli, workspace)
    assert "warm target dir (its first build here): 0 unit(s) fresh, 2 rebuilt" in first
    assert _run(workspace) == "hello 1"

    _edit(workspace / "app" / "src" / "main.rs", "let round = 1;", "let round = 2;")
    second, build = _build_view(cli, workspace)
    [job] = build["jobs"]
    warm_s = _seconds(job)
    # from cargo's compiler-artifact messages: the library was fresh, the binary rebuilt
    assert "warm target dir: 1 unit(s) fresh, 1 rebuilt: app (bin)" in second
    assert _run(workspace) == "hello 2"
    # the worker's report reaches the job record, --json and the summary's CACHE column
    assert job["reuse"] == {"target_dir": "warm", "units": 2, "fresh": 1,
                            "compile_cache": None}
    assert _cache_cell(cli, workspace, build["build_id"]) == "warm:50%"

    # a change in the library reaches the binary that uses it, as in a clean build
    _edit(workspace / "greet" / "src" / "lib.rs", '"hello"', '"howdy"')
    third, _ = _build(cli, workspace)
    assert "warm target dir: 0 unit(s) fresh, 2 rebuilt: greet (lib), app (bin)" in third
    assert _run(workspace) == "howdy 2"
    # and a build of the same tree with nothing changed rebuilds nothing
    fourth, noop_s = _build(cli, workspace)
    assert "warm target dir: 2 unit(s) fresh, 0 rebuilt: none" in fourth, fourth
    assert _run(workspace) == "howdy 2"
    print(f"\nworker seconds: cold {cold_s:.2f}, one-line change warm {warm_s:.2f}, "
          f"unchanged {noop_s:.2f}")


def test_two_builds_of_one_project_at_once_never_share_a_dir_and_both_are_right(
    warm_worker, workspace, cli, tmp_path
):
    other = tmp_path / "second-copy"
    shutil.copytree(workspace, other)
    _edit(other / "app" / "src" / "main.rs", "let round = 1;", "let round = 7;")
    with ThreadPoolExecutor(2) as pool:
        logs = list(pool.map(lambda ws: _build(cli, ws)[0], [workspace, other]))
    assert (_run(workspace), _run(other)) == ("hello 1", "hello 7")
    for log in logs:  # each had the dir alone, or built cold while the other held it
        assert ("crossfarm: warm target dir" in log) != (
            "cold target dir: another build of app,greet holds its warm dir" in log), log


def test_a_worker_over_its_warm_budget_drops_the_dir_and_the_next_build_is_right(
    farm, only, workspace, cli
):
    farm.start_worker("worker-tiny", CROSSFARM_WARM_BYTES="1", **WARM)
    try:
        first, _ = _build(cli, workspace)
        assert "warm target dir (its first build here)" in first
        assert "1 warm target dir(s) dropped to keep this worker under " \
               "CROSSFARM_WARM_BYTES=1" in first
        assert _warm_volumes("worker-tiny") == []
        _edit(workspace / "app" / "src" / "main.rs", "let round = 1;", "let round = 3;")
        second, _ = _build(cli, workspace)
        assert "warm target dir (its first build here): 0 unit(s) fresh, 2 rebuilt" in second
        assert _run(workspace) == "hello 3"
    finally:
        farm.stop_process("worker-tiny")
        _drop_warm_dirs(farm, "worker-tiny")


@pytest.fixture
def two_warm_workers(farm, only) -> Iterator[tuple[str, str]]:
    """Two amd64 workers with warm dirs on, one slot each; the shared worker drained."""
    names = ("worker-warm-a", "worker-warm-b")
    try:
        for name in names:
            farm.start_worker(name, CROSSFARM_WARM_BYTES=str(4 * 1024**3),
                              **{**WARM, "CROSSFARM_CONCURRENCY": "1"})
        yield names
    finally:
        for name in names:
            if name in farm.procs:
                farm.stop_process(name)
            _drop_warm_dirs(farm, name)


def _job_of(api, build_id: str) -> dict:
    [job] = api.get(f"/v1/builds/{build_id}").json()["jobs"]
    return job


def test_affinity_sends_a_projects_next_build_to_the_worker_keeping_its_dir_until_it_is_busy(
    two_warm_workers, workspace, cli, api, tmp_path
):
    result = cli(workspace, "build", "--target", X86, "--json")
    assert result.returncode == 0, result.stderr
    [first] = json.loads(result.stdout)["build"]["jobs"]
    keeper = first["worker"]
    other = next(name for name in two_warm_workers if name != keeper)

    # The second build of the project lands where the first did, and says why.
    _edit(workspace / "app" / "src" / "main.rs", "let round = 1;", "let round = 2;")
    result = cli(workspace, "build", "--target", X86, "--json")
    assert result.returncode == 0, result.stderr
    [second] = json.loads(result.stdout)["build"]["jobs"]
    assert second["worker"] == keeper
    assert second["placed"] == (f"affinity: worker {keeper} keeps this project's warm "
                                "target dir and has a free slot")
    assert "warm target dir: 1 unit(s) fresh, 1 rebuilt: app (bin)" in result.stderr

    # A build of the project that does not end keeps the keeper busy (it goes there too).
    blocker = tmp_path / "blocker"
    shutil.copytree(workspace, blocker, ignore=shutil.ignore_patterns("target"))
    (blocker / "app" / "build.rs").write_text(
        "fn main() { std::thread::sleep(std::time::Duration::from_secs(900)); }\n")
    result = cli(blocker, "build", "--target", X86, "--json", "--detach")
    assert result.returncode == 0, result.stderr
    blocking = json.loads(result.stdout)["build_id"]
    try:
        running = until(lambda: (j := _job_of(api, blocking))["state"] == "running" and j,
                        "the blocking build running", timeout=300)
        assert running["worker"] == keeper

        # With the keeper busy past the bound, the next build runs on the other worker.
        _edit(workspace / "app" / "src" / "main.rs", "let round = 2;", "let round = 3;")
        result = cli(workspace, "build", "--target", X86, "--json")
        assert result.returncode == 0, result.stderr
        [third] = json.loads(result.stdout)["build"]["jobs"]
        assert third["worker"] == other
        why = (f"any amd64 worker: {keeper} keep(s) this project's warm target dir but "
               "stayed busy past the 10 s affinity bound")
        assert third["placed"] == why
        assert why in result.stderr
        assert _run(workspace) == "hello 3"
    finally:
        api.post(f"/v1/builds/{blocking}/cancel")
        until(lambda: _job_of(api, blocking)["state"] == "cancelled", "the blocker cancelled",
              timeout=120)
