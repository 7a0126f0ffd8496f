import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from crossfarm.client.render import build_table, builds_table, emit_json, workers_table
from crossfarm.shared.arch import BuildMode
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import (
    ArchSummary,
    ArtifactView,
    BuildView,
    CargoReuse,
    CargoSpec,
    CompileCacheUse,
    Fleet,
    JobView,
    WorkerHeartbeat,
    WorkerLimits,
    WorkerState,
    WorkerView,
)

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
DIGEST = "0123456789abcdef" * 4
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def _job(target, state, **fields):
    return JobView(
        job_id=f"j-{target[:4]}",
        target=target,
        arch="amd64",
        queue="crossfarm.builds.amd64",
        state=state,
        attempt=1,
        queued_at=T0,
        **fields,
    )


def _build(build_id, jobs, state=BuildState.RUNNING, submitter=None, created_at=T0):
    return BuildView(
        build_id=build_id,
        state=state,
        created_at=created_at,
        source=DIGEST,
        cargo=CargoSpec(),
        submitter=submitter,
        jobs=jobs,
    )


def _artifact(target, name):
    return ArtifactView(
        target=target,
        name=name,
        size=3,
        sha256=DIGEST,
        url=f"http://s3/{name}",
        path=f"target/{target}/debug/{name}",
    )


def _rows(out):
    return [line.split() for line in out.getvalue().splitlines()]


def test_a_build_table_has_one_row_per_job_with_worker_mode_time_and_artifacts():
    view = _build(
        "b-0123456789abcdef",
        [
            _job(
                X86,
                BuildState.SUCCEEDED,
                worker="w1",
                mode=BuildMode.NATIVE,
                started_at=T0,
                finished_at=T0 + timedelta(seconds=12.5),
                reuse=CargoReuse(target_dir="cold", units=4, fresh=0),
            ),
            _job(
                ARM,
                BuildState.FAILED,
                worker="w2",
                mode=BuildMode.CROSS,
                started_at=T0,
                finished_at=T0 + timedelta(seconds=3),
                reason="cargo failed",
                reuse=CargoReuse(target_dir="warm", units=8, fresh=6),
            ),
        ],
        state=BuildState.FAILED,
    )
    out = io.StringIO()

    build_table(view, [_artifact(X86, "hello"), _artifact(X86, "hello.d")], out=out)

    rows = _rows(out)
    assert rows[0] == ["build", "b-0123456789abcdef:", "failed"]
    assert rows[1] == ["TARGET", "RESULT", "CACHE", "WORKER", "MODE", "TIME", "ARTIFACTS",
                       "WHY"]
    assert rows[2:] == [
        [X86, "succeeded", "cold:0%", "w1", "native", "12.5s", "2"],
        [ARM, "failed", "warm:75%", "w2", "cross", "3.0s", "0", "cargo", "failed"],
    ]


def test_a_job_that_has_not_run_shows_dashes():
    out = io.StringIO()
    build_table(_build("b-0123456789abcdef", [_job(X86, BuildState.QUEUED)]), out=out)
    assert _rows(out)[2] == [X86, "queued", "-", "-", "-", "-", "0"]


def test_a_queued_job_says_what_it_waits_for():
    job = _job(ARM, BuildState.QUEUED, placed="native: waiting, as native allows nothing else",
               waiting="waiting: no arm64 worker online")
    out = io.StringIO()
    build_table(_build("b-0123456789abcdef", [job]), out=out)
    assert _rows(out)[2][:7] == [ARM, "queued", "-", "-", "-", "-", "0"]
    assert " ".join(_rows(out)[2][7:]) == "waiting: no arm64 worker online"


def test_a_job_that_ran_says_why_it_was_placed_where_it_ran():
    job = _job(ARM, BuildState.SUCCEEDED, worker="w1", mode=BuildMode.CROSS, started_at=T0,
               finished_at=T0 + timedelta(seconds=1),
               placed="cross: no arm64 worker online; cross-ok allows a cross toolchain",
               waiting="queued: position 1 in crossfarm.builds.arm64.cross")
    out = io.StringIO()
    build_table(_build("b-0123456789abcdef", [job], state=BuildState.SUCCEEDED), out=out)
    assert " ".join(_rows(out)[2][7:]) == (
        "cross: no arm64 worker online; cross-ok allows a cross toolchain")


def test_a_failed_jobs_reason_comes_before_its_placement():
    job = _job(ARM, BuildState.FAILED, placed="native: waiting, as native allows nothing else",
               waiting="waiting: no arm64 worker online",
               reason="no worker started it within its wait limit of 60 s")
    out = io.StringIO()
    build_table(_build("b-0123456789abcdef", [job], state=BuildState.FAILED), out=out)
    assert " ".join(_rows(out)[2][7:]) == "no worker started it within its wait limit of 60 s"


def test_a_job_served_from_the_result_cache_says_cached_and_from_which_build():
    job = _job(X86, BuildState.SUCCEEDED, cached_from="b-00000000000000aa", finished_at=T0,
               placed="cached: build b-00000000000000aa made it from the same inputs "
                      "with this image")
    out = io.StringIO()
    build_table(_build("b-0123456789abcdef", [job], state=BuildState.SUCCEEDED),
                [_artifact(X86, "hello")], out=out)
    row = _rows(out)[2]
    assert row[:7] == [X86, "succeeded", "cached", "-", "-", "-", "1"]
    assert "b-00000000000000aa" in row[7:]


def test_a_running_job_says_nothing_of_its_cache_until_cargo_has_run():
    job = _job(X86, BuildState.RUNNING, worker="w1", mode=BuildMode.NATIVE, started_at=T0)
    out = io.StringIO()
    build_table(_build("b-0123456789abcdef", [job]), out=out)
    assert _rows(out)[2][2] == "-"


def test_a_warm_build_says_warm_and_the_share_of_fresh_units():
    job = _job(X86, BuildState.SUCCEEDED, worker="w1", mode=BuildMode.NATIVE, started_at=T0,
               finished_at=T0, reuse=CargoReuse(target_dir="warm", units=122, fresh=121))
    out = io.StringIO()
    build_table(_build("b-0123456789abcdef", [job], state=BuildState.SUCCEEDED), out=out)
    assert _rows(out)[2][2] == "warm:99%"


def test_a_build_whose_cargo_reported_no_units_says_only_its_target_dir():
    job = _job(X86, BuildState.FAILED, worker="w1", mode=BuildMode.NATIVE, started_at=T0,
               finished_at=T0, reuse=CargoReuse(target_dir="cold", units=0, fresh=0))
    out = io.StringIO()
    build_table(_build("b-0123456789abcdef", [job], state=BuildState.FAILED), out=out)
    assert _rows(out)[2][2] == "cold"


@pytest.mark.parametrize(("compiled", "cell"), [
    (CompileCacheUse(hits=23, misses=2), "cold:0%,sccache:92%"),
    (CompileCacheUse(hits=0, misses=0), "cold:0%,sccache:-"),
])
def test_a_build_with_the_compile_cache_adds_sccaches_hit_rate_in_the_same_token(
        compiled, cell):
    job = _job(X86, BuildState.SUCCEEDED, worker="w1", mode=BuildMode.NATIVE, started_at=T0,
               finished_at=T0, reuse=CargoReuse(target_dir="cold", units=4, fresh=0,
                                                compile_cache=compiled))
    out = io.StringIO()
    build_table(_build("b-0123456789abcdef", [job], state=BuildState.SUCCEEDED), out=out)
    assert _rows(out)[2][2] == cell


def test_the_columns_line_up():
    out = io.StringIO()
    build_table(
        _build("b-0123456789abcdef", [_job(X86, BuildState.QUEUED), _job(ARM, BuildState.QUEUED)]),
        out=out,
    )
    lines = out.getvalue().splitlines()[1:]
    starts = {
        line.index(cell) for line, cell in zip(lines, ["RESULT", "queued", "queued"], strict=True)
    }
    assert len(starts) == 1


def test_a_builds_table_lists_each_build_with_its_targets_and_submitter():
    out = io.StringIO()
    builds_table(
        [
            _build(
                "b-0000000000000002",
                [_job(X86, BuildState.RUNNING), _job(ARM, BuildState.QUEUED)],
                submitter="ada",
                created_at=T0 + timedelta(minutes=5),
            ),
            _build(
                "b-0000000000000001", [_job(X86, BuildState.SUCCEEDED)], state=BuildState.SUCCEEDED
            ),
        ],
        out=out,
    )
    assert _rows(out) == [
        ["BUILD", "STATE", "CREATED", "TARGETS", "SUBMITTER"],
        ["b-0000000000000002", "running", "2024-05-01", "12:05:00", f"{X86},{ARM}", "ada"],
        ["b-0000000000000001", "succeeded", "2024-05-01", "12:00:00", X86, "-"],
    ]


def _worker(name, state, arch, queues, running, limits=None):
    info = WorkerHeartbeat(
        hostname=name,
        arch=arch,
        queues=queues,
        cpus=8,
        memory_bytes=1024,
        builder_image="crossfarm/builder:1",
        targets=[X86],
        version="0.1.0",
        concurrency=1,
        limits=limits,
    )
    return WorkerView(
        name=name, state=state, last_seen=T0, started_at=T0, running_jobs=running, info=info
    )


def test_a_workers_table_shows_online_and_lost_workers_and_each_architecture():
    fleet = Fleet(
        workers=[
            _worker(
                "w1",
                WorkerState.ONLINE,
                "amd64",
                {
                    "crossfarm.builds.amd64": BuildMode.NATIVE,
                    "crossfarm.builds.arm64.cross": BuildMode.CROSS,
                },
                ["j-0000000000000001"],
            ),
            _worker(
                "w2", WorkerState.LOST, "arm64", {"crossfarm.builds.arm64": BuildMode.NATIVE}, []
            ),
        ],
        arches=[
            ArchSummary(
                arch="amd64",
                queue="crossfarm.builds.amd64",
                workers_online=1,
                queue_depth=0,
                oldest_waiting=None,
            ),
            ArchSummary(
                arch="arm64",
                queue="crossfarm.builds.arm64",
                workers_online=0,
                cross_workers=1,
                queue_depth=4,
                oldest_waiting=T0 - timedelta(minutes=1),
            ),
        ],
    )
    out = io.StringIO()

    workers_table(fleet, out=out)

    assert _rows(out) == [
        ["WORKER", "STATE", "ARCH", "QUEUES", "CPUS", "RUNNING", "LAST", "SEEN"],
        ["w1", "online", "amd64", "amd64:native,arm64:cross", "8", "1", "12:00:00"],
        ["w2", "lost", "arm64", "arm64:native", "8", "0", "12:00:00"],
        [],
        ["WORKER", "MEMORY", "PIDS", "CPUS", "DISK", "TMPFS", "ARTIFACTS", "ARTIFACT", "BYTES",
         "LOG", "LOG", "LINE"],
        ["w1", *["?"] * 9],
        ["w2", *["?"] * 9],
        ["?:", "not", "reported", "by", "w1,", "w2", "(too", "old", "to", "report", "limits)"],
        [],
        ["ARCH", "NATIVE", "CROSS", "EMULATED", "QUEUED", "OLDEST", "WAITING"],
        ["amd64", "1", "0", "0", "0", "-"],
        ["arm64", "0", "1", "0", "4", "11:59:00"],
    ]


def test_a_workers_queues_are_shown_by_architecture_and_mode():
    queues = {
        "crossfarm.builds.amd64": BuildMode.NATIVE,
        "crossfarm.builds.arm64.cross": BuildMode.CROSS,
        "crossfarm.builds.arm64.emulated": BuildMode.EMULATED,
    }
    fleet = Fleet(workers=[_worker("w1", WorkerState.ONLINE, "amd64", queues, [])], arches=[])
    out = io.StringIO()

    workers_table(fleet, out=out)

    assert _rows(out)[1][3] == "amd64:native,arm64:cross,arm64:emulated"


LIMITS = WorkerLimits(memory_bytes=8 * 1024**3, pids=4096, cpus=1.5, disk_bytes=20 * 1024**3,
                      tmpfs_bytes=512 * 1024**2, artifact_count=256,
                      artifact_bytes=4 * 1024**3, log_bytes=32 * 1024**2,
                      log_line_bytes=64 * 1024)


def test_a_workers_table_lists_the_limits_each_worker_holds_builds_to():
    unlimited_disk = LIMITS.model_copy(update={"disk_bytes": None})
    fleet = Fleet(workers=[
        _worker("w1", WorkerState.ONLINE, "amd64", {}, [], limits=LIMITS),
        _worker("w2", WorkerState.ONLINE, "amd64", {}, [], limits=unlimited_disk),
    ], arches=[])
    out = io.StringIO()

    workers_table(fleet, out=out)

    rows = _rows(out)
    limits_at = rows.index([])
    assert rows[limits_at + 1:limits_at + 4] == [
        ["WORKER", "MEMORY", "PIDS", "CPUS", "DISK", "TMPFS", "ARTIFACTS", "ARTIFACT", "BYTES",
         "LOG", "LOG", "LINE"],
        ["w1", "8GiB", "4096", "1.5", "20GiB", "512MiB", "256", "4GiB", "32MiB", "64KiB"],
        ["w2", "8GiB", "4096", "1.5", "-", "512MiB", "256", "4GiB", "32MiB", "64KiB"],
    ]


def test_the_json_of_the_fleet_carries_each_workers_limits(capsys):
    fleet = Fleet(workers=[_worker("w1", WorkerState.ONLINE, "amd64", {}, [], limits=LIMITS)],
                  arches=[])

    emit_json(fleet)

    [worker] = json.loads(capsys.readouterr().out)["workers"]
    assert WorkerLimits.model_validate(worker["info"]["limits"]) == LIMITS
