"""The builder image's /usr and /opt from volumes (worker/image_volumes.py): when a worker
wants them, the start-up copy made once per image id and made again when cut short,
the old ids' copies dropped, and the build step mounting them read-only once ready."""

from __future__ import annotations

import pytest
from fakes import FakeCrates, FakeDocker, FakeReporter, FakeStorage, Replay

from crossfarm.shared import keys
from crossfarm.shared.arch import Arch
from crossfarm.shared.ids import BuildId
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import CargoSpec, JobMessage
from crossfarm.worker import image_volumes
from crossfarm.worker.pipeline import Toolbox, run_job
from crossfarm.worker.settings import WorkerSettings

IMAGE = "crossfarm/builder:1"
OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64
X86 = "x86_64-unknown-linux-gnu"
BUILD = "b-0123456789abcdef"


@pytest.mark.parametrize(("setting", "driver", "wanted"), [
    ("auto", "fuse-overlayfs", True), ("auto", "vfs", True), ("auto", "overlay2", False),
    ("auto", None, False), ("on", "overlay2", True), ("off", "fuse-overlayfs", False),
])
def test_auto_copies_where_the_storage_driver_runs_in_user_space(setting, driver, wanted):
    assert image_volumes.wanted(setting, driver) is wanted


def test_an_images_trees_are_copied_once_and_then_mounted_read_only_by_id():
    docker = FakeDocker(driver="fuse-overlayfs")
    said: list[str] = []

    assert image_volumes.mounts(docker, "auto", IMAGE) == {}  # nothing copied yet
    assert image_volumes.fill(docker, IMAGE, said.append)
    assert image_volumes.fill(docker, IMAGE, said.append)

    assert docker.calls.count("fill_volumes") == 1
    names = image_volumes.volume_names(docker.image_id(IMAGE))
    assert sorted(names.values()) == ["/opt", "/usr"]
    assert {docker.filled[name] for name in names} == {(IMAGE, "/usr"), (IMAGE, "/opt")}
    [copied] = said
    assert "copied crossfarm/builder:1's /usr, /opt" in copied
    assert image_volumes.mounts(docker, "auto", IMAGE) == names
    assert image_volumes.mounts(docker, "off", IMAGE) == {}
    assert image_volumes.mounts(FakeDocker(driver="overlay2"), "auto", IMAGE) == {}


def test_a_copy_cut_short_is_not_used_and_is_made_again_from_empty_volumes():
    docker = FakeDocker(driver="fuse-overlayfs")
    docker.fill_fails[IMAGE] = RuntimeError("the engine went away mid-copy")

    assert not image_volumes.fill(docker, IMAGE, print)
    assert image_volumes.mounts(docker, "on", IMAGE) == {}  # no marker: never mounted

    del docker.fill_fails[IMAGE]
    docker.removed.clear()
    assert image_volumes.fill(docker, IMAGE, print)
    names = image_volumes.volume_names(docker.image_id(IMAGE))
    assert set(names) <= set(docker.removed)  # emptied before the second copy
    assert image_volumes.mounts(docker, "on", IMAGE) == names


def test_a_rebuilt_image_gets_new_volumes_and_the_old_ids_are_dropped():
    docker = FakeDocker(driver="fuse-overlayfs")
    docker.image_ids[IMAGE] = OLD
    image_volumes.fill(docker, IMAGE, print)
    old = {*image_volumes.volume_names(OLD), image_volumes.marker_name(OLD)}
    docker.image_ids[IMAGE] = NEW

    image_volumes.fill(docker, IMAGE, print)

    assert not old & set(docker.kept)
    assert set(image_volumes.volume_names(NEW)) <= set(docker.kept)
    assert all(keys.labelled_image_id(docker.kept[name]) == NEW
               for name in image_volumes.volume_names(NEW))


def test_a_missing_image_is_not_copied():
    docker = FakeDocker(driver="fuse-overlayfs", missing=[IMAGE])

    assert not image_volumes.fill(docker, IMAGE, print)
    assert "fill_volumes" not in docker.calls


def _run(tmp_path, docker: FakeDocker) -> tuple[FakeDocker, str]:
    storage = FakeStorage()
    source = storage.store_tree({
        "Cargo.toml": b'[package]\nname = "app"\nversion = "0.1.0"\n',
        "Cargo.lock": b'version = 3\n\n[[package]]\nname = "app"\nversion = "0.1.0"\n',
        "src/main.rs": b"fn main() {}\n"})
    tools = Toolbox(settings=WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch",
                                            warm_bytes=0),
                    host=Arch.AMD64, docker=docker, storage=storage, reporter=FakeReporter(),
                    crates=FakeCrates())
    job = JobMessage(job_id="j-0123456789abcdef", build_id=BUILD, target=X86, attempt=1,
                     source=source, cargo=CargoSpec(), timeout_s=600, tenant="acme")
    state = run_job(tools, job, "crossfarm.builds.amd64")
    log = storage.objects[keys.log_key(BuildId(BUILD), X86, 1)].decode()
    assert state is BuildState.SUCCEEDED, log
    return docker, log


def test_the_build_step_mounts_a_ready_copy_read_only_over_the_images_own_trees(tmp_path):
    docker = FakeDocker([Replay(lines=[])], driver="fuse-overlayfs")
    image_volumes.fill(docker, IMAGE, print)

    docker, log = _run(tmp_path, docker)

    [build] = docker.containers
    names = image_volumes.volume_names(docker.image_id(IMAGE))
    assert {n: p for n, p in build.step.readonly_volumes.items() if n in names} == names
    assert not set(names) & set(build.step.volumes)  # never writable
    assert f"{IMAGE}'s /usr and /opt read from volumes copied from it" in log


def test_until_the_copy_is_ready_the_build_reads_the_image(tmp_path):
    docker, log = _run(tmp_path, FakeDocker([Replay(lines=[])], driver="fuse-overlayfs"))

    [build] = docker.containers
    assert "/usr" not in build.step.readonly_volumes.values()
    assert "read from volumes" not in log
    assert "fill_volumes" not in docker.calls  # a build never makes the copy itself
