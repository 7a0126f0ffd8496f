import pytest

from crossfarm.shared.arch import Arch, BuildMode
from crossfarm.shared.errors import BuildError, UnsupportedTarget
from crossfarm.worker.images import builder_image, job_mode, served_queues

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
AMD64_QUEUE = "crossfarm.builds.amd64"
ARM64_QUEUE = "crossfarm.builds.arm64"
ARM64_CROSS = "crossfarm.builds.arm64.cross"
ARM64_EMULATED = "crossfarm.builds.arm64.emulated"
AMD64_CROSS = "crossfarm.builds.amd64.cross"

#: an amd64 worker with an arm64 cross toolchain and arm64 emulation
SERVED = {
    AMD64_QUEUE: BuildMode.NATIVE,
    ARM64_CROSS: BuildMode.CROSS,
    ARM64_EMULATED: BuildMode.EMULATED,
}


def test_an_amd64_host_with_arm64_cross_and_emulation_serves_three_queues_native_first():
    served = served_queues(Arch.AMD64, [Arch.ARM64], [Arch.ARM64])
    assert served == SERVED
    assert next(iter(served)) == AMD64_QUEUE


def test_a_host_alone_serves_only_its_native_queue():
    assert served_queues(Arch.ARM64, [], []) == {ARM64_QUEUE: BuildMode.NATIVE}


def test_the_host_listed_as_a_cross_or_emulated_arch_is_ignored():
    assert served_queues(Arch.AMD64, [Arch.AMD64, Arch.ARM64], [Arch.AMD64]) == {
        AMD64_QUEUE: BuildMode.NATIVE,
        ARM64_CROSS: BuildMode.CROSS,
    }


def test_an_arch_named_twice_is_served_once():
    assert list(served_queues(Arch.AMD64, [Arch.ARM64, Arch.ARM64], [])) == [
        AMD64_QUEUE, ARM64_CROSS]


def test_served_queues_accept_any_iterable_of_arches():
    assert served_queues(Arch.AMD64, (a for a in [Arch.ARM64]), iter(())) == {
        AMD64_QUEUE: BuildMode.NATIVE, ARM64_CROSS: BuildMode.CROSS}


@pytest.mark.parametrize(
    ("target", "queue", "mode"),
    [
        (X86, AMD64_QUEUE, BuildMode.NATIVE),
        (ARM, ARM64_CROSS, BuildMode.CROSS),
        (ARM, ARM64_EMULATED, BuildMode.EMULATED),
    ],
)
def test_a_job_from_a_served_queue_builds_in_that_queues_mode(target, queue, mode):
    assert job_mode(target, queue, SERVED) is mode


def test_native_wins_even_when_the_host_is_listed_as_a_cross_arch():
    served = served_queues(Arch.AMD64, [Arch.AMD64, Arch.ARM64], [])
    assert job_mode(X86, AMD64_QUEUE, served) is BuildMode.NATIVE


@pytest.mark.parametrize(
    ("target", "host", "cross"),
    [(ARM, Arch.AMD64, [Arch.ARM64]), (X86, Arch.ARM64, [Arch.AMD64])],
)
def test_a_target_of_a_served_cross_arch_builds_with_the_cross_toolchain(target, host, cross):
    served = served_queues(host, cross, [])
    queue = next(q for q, mode in served.items() if mode is BuildMode.CROSS)
    assert job_mode(target, queue, served) is BuildMode.CROSS


@pytest.mark.parametrize("queue", [ARM64_QUEUE, AMD64_CROSS])
def test_a_job_from_a_queue_this_worker_does_not_serve_is_a_build_error_naming_it(queue):
    target = ARM if queue == ARM64_QUEUE else X86
    with pytest.raises(BuildError, match=f"does not serve {queue}") as exc:
        job_mode(target, queue, SERVED)
    assert exc.value.exit_code is None


@pytest.mark.parametrize(("target", "queue"), [(X86, ARM64_CROSS), (ARM, AMD64_QUEUE)])
def test_a_target_on_a_queue_of_another_architecture_is_a_build_error(target, queue):
    with pytest.raises(BuildError, match=f"{target} does not belong on {queue}"):
        job_mode(target, queue, SERVED)


@pytest.mark.parametrize("queue", ["celery", "unknown", "crossfarm.builds.riscv64", ""])
def test_a_job_from_a_queue_that_is_not_crossfarms_is_a_build_error(queue):
    with pytest.raises(BuildError, match="unknown queue"):
        job_mode(X86, queue, {**SERVED, queue: BuildMode.NATIVE})


def test_an_unsupported_target_is_refused_before_choosing_a_mode():
    with pytest.raises(UnsupportedTarget):
        job_mode("riscv64gc-unknown-linux-gnu", AMD64_QUEUE, SERVED)


@pytest.mark.parametrize("mode", [BuildMode.NATIVE, BuildMode.CROSS])
def test_native_and_cross_builds_use_the_workers_own_builder(mode):
    images = {"arm64": "crossfarm/builder-arm64:1"}
    assert builder_image(mode, Arch.ARM64, "crossfarm/builder:1", images) == "crossfarm/builder:1"


def test_an_emulated_build_uses_the_builder_image_of_the_targets_architecture():
    images = {"arm64": "crossfarm/builder-arm64:1", "amd64": "crossfarm/builder-amd64:1"}
    assert builder_image(BuildMode.EMULATED, Arch.ARM64, "crossfarm/builder:1", images) == (
        "crossfarm/builder-arm64:1")


def test_an_emulated_build_without_an_image_is_a_build_error_that_says_what_to_set():
    with pytest.raises(BuildError, match="CROSSFARM_EMULATION_IMAGES") as exc:
        builder_image(BuildMode.EMULATED, Arch.ARM64, "crossfarm/builder:1",
                      {"amd64": "crossfarm/builder-amd64:1"})
    assert "arm64" in exc.value.message


def test_a_neutral_target_is_built_natively_from_any_queue_this_worker_serves():
    served = served_queues(Arch.AMD64, [Arch.ARM64], [])
    for queue in served:
        assert job_mode("wasm32-unknown-unknown", queue, served) is BuildMode.NATIVE
