"""What the fleet's toolchain announcements decide: the toolchain a request names, the
targets it may ask for, where an architecture-neutral one goes, what /v1/targets shows;
and submit_build using them."""

import pytest
from farm_fakes import FakeEvents, FakeQueue

from crossfarm.controller import toolchains
from crossfarm.controller.builds import submit_build
from crossfarm.controller.farm import Farm
from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store import Store
from crossfarm.shared.arch import Arch, Placement
from crossfarm.shared.errors import UnknownToolchain, UnsupportedTarget
from crossfarm.shared.wire import (
    BuildRequest,
    CargoSpec,
    SourceStatus,
    ToolchainOffer,
    WorkerHeartbeat,
)

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
WASM = "wasm32-unknown-unknown"
DIGEST = "0123456789abcdef" * 4
AMD64_QUEUE = "crossfarm.builds.amd64"
ARM64_QUEUE = "crossfarm.builds.arm64"
ARM64_CROSS = "crossfarm.builds.arm64.cross"


def _offer(name, release, targets, default=False, image=None):
    return ToolchainOffer(name=name, image=image or f"builder-{name}", release=release,
                          rustc=f"rustc {release}\nrelease: {release}", targets=targets,
                          default=default, image_id="sha256:" + name.replace(".", "") * 8)


NEW = _offer("1.96", "1.96.0", [ARM, X86], default=True)
OLD = _offer("1.63", "1.63.0", [WASM, X86])
ARM_NEW = _offer("1.96", "1.96.0", [ARM], default=True)


def _worker(arch, queues, offers, concurrency=1, running=()):
    return WorkerHeartbeat(
        hostname="h", arch=arch, queues=queues, cpus=4, memory_bytes=8 * 1024**3,
        builder_image="crossfarm/builder:1", targets=[X86, ARM], version="0.1.0",
        concurrency=concurrency, toolchains=offers, running=list(running))


def _fleet():
    return {"amd64-1": _worker("amd64", {AMD64_QUEUE: "native", ARM64_CROSS: "cross"},
                               [NEW, OLD]),
            "arm64-1": _worker("arm64", {ARM64_QUEUE: "native"}, [ARM_NEW])}


@pytest.mark.parametrize(("asked", "name"), [
    ("1.63", "1.63"), ("1.63.0", "1.63"), ("1.96", "1.96"), ("stable", None), (None, None)])
def test_a_toolchain_is_resolved_by_name_release_or_the_stable_channel(asked, name):
    assert toolchains.resolve(asked, _fleet().values()) == name


@pytest.mark.parametrize("asked", ["1.70", "1.6", "nightly", "1.63.1"])
def test_an_unknown_toolchain_is_refused_naming_the_available_ones(asked):
    with pytest.raises(UnknownToolchain) as refused:
        toolchains.resolve(asked, _fleet().values())
    assert refused.value.available == ["1.63", "1.96"]
    assert refused.value.toolchain == asked
    assert "CROSSFARM_TOOLCHAINS" in refused.value.message


def test_a_target_a_named_toolchain_has_no_std_for_is_refused_with_what_it_builds():
    with pytest.raises(UnsupportedTarget) as refused:
        toolchains.check_target(ARM, "1.63", _fleet())
    assert refused.value.supported == [WASM, X86]


def test_a_neutral_target_must_be_offered_by_an_online_worker():
    toolchains.check_target(WASM, "1.63", _fleet())
    with pytest.raises(UnsupportedTarget):
        toolchains.check_target(WASM, None, _fleet())  # the default 1.96 has no wasm32 std


def test_a_table_target_with_the_default_toolchain_may_wait_for_a_worker():
    toolchains.check_target(ARM, None, {})  # no worker online yet: it waits, as before


def test_a_neutral_target_goes_to_the_architecture_with_the_most_free_slots():
    fleet = {"amd64-1": _worker("amd64", {AMD64_QUEUE: "native"}, [OLD], concurrency=2,
                                running=["j-1-1", "j-2-1"]),
             "arm64-1": _worker("arm64", {ARM64_QUEUE: "native"},
                                [_offer("1.63", "1.63.0", [WASM])])}
    assert toolchains.neutral_arch(WASM, "1.63", fleet) is Arch.ARM64
    fleet["amd64-1"] = fleet["amd64-1"].model_copy(update={"running": []})
    assert toolchains.neutral_arch(WASM, "1.63", fleet) is Arch.AMD64


def test_the_farms_targets_say_per_toolchain_where_each_target_goes():
    offer = {t.name: t for t in toolchains.farm_targets(_fleet()).toolchains}

    assert list(offer) == ["1.63", "1.96"]
    assert offer["1.96"].default
    assert not offer["1.63"].default
    new = {p.target: p for p in offer["1.96"].targets}
    assert (new[ARM].native, new[ARM].cross, new[ARM].workers) == (
        [Arch.ARM64], [Arch.AMD64], 2)
    old = {p.target: p for p in offer["1.63"].targets}
    assert (old[WASM].arch, old[WASM].native) == (None, [Arch.AMD64])
    assert ARM not in old


def test_a_worker_older_than_announcements_counts_for_the_default_toolchain_only():
    old = _worker("amd64", {AMD64_QUEUE: "native"}, [])
    assert toolchains.builds(old, None, X86)
    assert not toolchains.builds(old, "1.63", X86)


@pytest.fixture
def farm(tmp_path):
    settings = ControllerSettings(database_url=f"sqlite:///{tmp_path}/crossfarm.db",
                                  default_placement=Placement.CROSS_OK)
    store = Store(settings.database_url)
    store.sources.add_tree(SourceStatus(digest=DIGEST, files=1, total_bytes=10, locked=True))
    queue = FakeQueue()
    yield Farm(settings=settings, store=store, queue=queue, events=FakeEvents(queue),
               storage=None)
    store.close()


def _online(farm, fleet):
    for name, info in fleet.items():
        farm.store.workers.heartbeat(name, info, fresh_start=True)


def test_submit_records_the_resolved_toolchain_in_the_builds_cargo_spec(farm):
    _online(farm, _fleet())

    build = submit_build(farm, BuildRequest(source=DIGEST, targets=[X86],
                                            cargo=CargoSpec(toolchain="1.63.0")))

    assert build.cargo.toolchain == "1.63"


def test_submit_refuses_an_unknown_toolchain_before_recording_anything(farm):
    _online(farm, _fleet())
    with pytest.raises(UnknownToolchain):
        submit_build(farm, BuildRequest(source=DIGEST, targets=[X86],
                                        cargo=CargoSpec(toolchain="1.70")))
    assert farm.store.builds.page(10).builds == []


def test_placement_counts_only_the_workers_with_the_toolchain(farm):
    # the arm64 worker has no 1.63; the amd64 one cross-builds aarch64 with 1.96 only
    fleet = _fleet()
    fleet["amd64-1"] = fleet["amd64-1"].model_copy(update={"toolchains": [
        NEW, _offer("1.63", "1.63.0", [ARM, X86])]})
    _online(farm, fleet)

    build = submit_build(farm, BuildRequest(source=DIGEST, targets=[ARM],
                                            cargo=CargoSpec(toolchain="1.63")))

    [job] = build.jobs
    assert str(job.queue) == ARM64_CROSS
    assert job.placed.startswith("cross: no arm64 worker online")


def test_a_wasm32_job_is_a_native_job_of_the_architecture_chosen(farm):
    _online(farm, _fleet())

    build = submit_build(farm, BuildRequest(source=DIGEST, targets=[WASM],
                                            cargo=CargoSpec(toolchain="1.63")))

    [job] = build.jobs
    assert (job.arch, str(job.queue)) == (Arch.AMD64, AMD64_QUEUE)
    assert "runs on no host CPU" in job.placed
