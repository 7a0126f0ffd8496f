import pytest

from crossfarm.controller.placement import Capacity, Decision, decide, replan, waiting_for
from crossfarm.shared.arch import Arch, BuildMode, Placement
from crossfarm.shared.keys import QueueKey

N, C, E = BuildMode.NATIVE, BuildMode.CROSS, BuildMode.EMULATED
ARM64_QUEUE = QueueKey.parse("crossfarm.builds.arm64")
ARM64_CROSS = QueueKey.parse("crossfarm.builds.arm64.cross")
ARM64_EMULATED = QueueKey.parse("crossfarm.builds.arm64.emulated")
AMD64_QUEUE = QueueKey.parse("crossfarm.builds.amd64")
QUEUE_OF = {N: ARM64_QUEUE, C: ARM64_CROSS, E: ARM64_EMULATED}
BOUND = 120.0


def _serving(*modes, arch=Arch.ARM64):
    """Capacity with one online worker for each of `modes` of `arch`."""
    return Capacity(online={QueueKey(arch, mode): 1 for mode in modes})


@pytest.mark.parametrize(
    ("placement", "served", "chosen"),
    [
        (Placement.NATIVE, (N,), N),
        (Placement.NATIVE, (N, C, E), N),
        (Placement.NATIVE, (C,), None),
        (Placement.NATIVE, (E,), None),
        (Placement.NATIVE, (C, E), None),
        (Placement.NATIVE, (), None),
        (Placement.CROSS_OK, (N,), N),
        (Placement.CROSS_OK, (N, C), N),
        (Placement.CROSS_OK, (N, E), N),
        (Placement.CROSS_OK, (C,), C),
        (Placement.CROSS_OK, (C, E), C),
        (Placement.CROSS_OK, (E,), None),
        (Placement.CROSS_OK, (), None),
        (Placement.EMULATE_OK, (N,), N),
        (Placement.EMULATE_OK, (N, C, E), N),
        (Placement.EMULATE_OK, (N, E), N),
        (Placement.EMULATE_OK, (C,), C),
        (Placement.EMULATE_OK, (C, E), C),
        (Placement.EMULATE_OK, (E,), E),
        (Placement.EMULATE_OK, (), None),
    ],
)
def test_decide_takes_the_best_mode_the_placement_allows_and_some_worker_serves(
    placement, served, chosen
):
    decision = decide(Arch.ARM64, placement, _serving(*served))
    if chosen is None:
        assert (decision.mode, decision.queue) == (N, ARM64_QUEUE)
        assert decision.waiting is not None
    else:
        assert (decision.mode, decision.queue) == (chosen, QUEUE_OF[chosen])
        assert decision.waiting is None


def test_a_native_placement_is_native_with_a_sentence_naming_the_arch():
    assert decide(Arch.ARM64, Placement.NATIVE, _serving(N)) == Decision(
        mode=N, queue=ARM64_QUEUE, placed="native: an arm64 worker is online")


def test_cross_ok_takes_the_cross_queue_only_when_no_native_worker_is_online():
    decision = decide(Arch.ARM64, Placement.CROSS_OK, _serving(C))
    assert decision.queue == ARM64_CROSS
    assert decision.placed == "cross: no arm64 worker online; cross-ok allows a cross toolchain"


def test_emulate_ok_takes_emulation_last_and_says_so():
    decision = decide(Arch.ARM64, Placement.EMULATE_OK, _serving(E))
    assert decision.queue == ARM64_EMULATED
    assert decision.placed == ("emulated: no arm64 worker or cross toolchain online; "
                               "emulate-ok allows emulation")


def test_a_worker_of_another_architecture_is_not_capacity_for_this_one():
    served = Capacity(online={(Arch.AMD64, N): 3, (Arch.AMD64, C): 1})
    decision = decide(Arch.ARM64, Placement.EMULATE_OK, served)
    assert decision.queue == ARM64_QUEUE
    assert decision.waiting is not None


def test_with_nothing_served_a_native_job_waits_and_is_told_to_allow_cross():
    decision = decide(Arch.ARM64, Placement.NATIVE, _serving())
    assert (decision.mode, decision.queue) == (N, ARM64_QUEUE)
    assert decision.placed.startswith("native: waiting")
    assert decision.waiting.startswith("waiting: no arm64 worker online")
    assert "--placement cross-ok" in decision.waiting


def test_with_nothing_served_a_cross_ok_job_waits_naming_the_missing_cross_toolchain():
    decision = decide(Arch.AMD64, Placement.CROSS_OK, _serving())
    assert decision.queue == AMD64_QUEUE
    assert decision.waiting == (
        "waiting: no amd64 worker online, none with a cross toolchain for amd64")


def test_with_nothing_served_an_emulate_ok_job_waits_naming_every_missing_mode():
    assert decide(Arch.ARM64, Placement.EMULATE_OK, _serving()).waiting == (
        "waiting: no arm64 worker online, none with a cross toolchain for arm64, "
        "none that emulates arm64")


def test_only_the_native_placement_gets_the_hint_to_allow_more():
    assert "--placement" in waiting_for(Arch.ARM64, Placement.NATIVE)
    assert "--placement" not in waiting_for(Arch.ARM64, Placement.CROSS_OK)
    assert "--placement" not in waiting_for(Arch.ARM64, Placement.EMULATE_OK)


def test_capacity_counts_online_workers_per_architecture_and_mode():
    capacity = Capacity.from_queues([
        [AMD64_QUEUE.name, ARM64_CROSS.name],
        [AMD64_QUEUE.name],
        [ARM64_QUEUE.name, ARM64_EMULATED.name],
        (q.name for q in [AMD64_QUEUE, ARM64_CROSS]),
    ])
    assert capacity.online == {
        QueueKey(Arch.AMD64, N): 3,
        QueueKey(Arch.ARM64, C): 2,
        QueueKey(Arch.ARM64, N): 1,
        QueueKey(Arch.ARM64, E): 1,
    }
    assert capacity.serves(Arch.ARM64, C)
    assert not capacity.serves(Arch.AMD64, C)


def test_capacity_ignores_queues_it_does_not_know():
    capacity = Capacity.from_queues([
        ["celery", "crossfarm.builds.riscv64", "crossfarm.builds.arm64.qemu"],
        ["crossfarm.builds.arm64.native", AMD64_QUEUE.name],
    ])
    assert capacity.online == {QueueKey(Arch.AMD64, N): 1}


# A worker naming its queue with an alias would never receive a job (jobs go to
# crossfarm.builds.arm64), so it must not count as arm64 capacity.
def test_capacity_does_not_count_a_queue_under_an_architecture_alias():
    capacity = Capacity.from_queues([["crossfarm.builds.aarch64"]])
    assert not capacity.serves(Arch.ARM64, N)


def test_an_empty_fleet_serves_nothing():
    capacity = Capacity.from_queues([])
    assert not any(capacity.serves(arch, mode) for arch in Arch for mode in BuildMode)


def test_a_job_on_a_queue_nobody_serves_moves_to_the_best_served_allowed_queue():
    moved = replan(ARM64_QUEUE, Arch.ARM64, Placement.EMULATE_OK, _serving(C, E),
                   waited_s=1, pickup_bound_s=BOUND)
    assert moved is not None
    assert (moved.mode, moved.queue, moved.waiting) == (C, ARM64_CROSS, None)
    assert moved.placed.startswith("cross: no arm64 worker online")


def test_a_job_on_a_cross_queue_whose_worker_left_moves_back_to_a_served_native_queue():
    moved = replan(ARM64_CROSS, Arch.ARM64, Placement.CROSS_OK, _serving(N),
                   waited_s=1, pickup_bound_s=BOUND)
    assert moved is not None
    assert moved.queue == ARM64_QUEUE


def test_a_job_on_an_emulated_queue_nobody_serves_moves_to_a_served_cross_queue():
    moved = replan(ARM64_EMULATED, Arch.ARM64, Placement.EMULATE_OK, _serving(C),
                   waited_s=1, pickup_bound_s=BOUND)
    assert moved is not None
    assert moved.queue == ARM64_CROSS


@pytest.mark.parametrize(
    ("queue", "placement", "served"),
    [
        (ARM64_QUEUE, Placement.NATIVE, (C, E)),
        (ARM64_QUEUE, Placement.CROSS_OK, (E,)),
        (ARM64_QUEUE, Placement.EMULATE_OK, ()),
        (ARM64_CROSS, Placement.CROSS_OK, ()),
        (ARM64_CROSS, Placement.CROSS_OK, (E,)),
        (ARM64_EMULATED, Placement.EMULATE_OK, ()),
    ],
)
def test_a_job_stays_where_it_is_when_no_allowed_queue_is_served(queue, placement, served):
    assert replan(queue, Arch.ARM64, placement, _serving(*served),
                  waited_s=10 * BOUND, pickup_bound_s=BOUND) is None


def test_a_native_job_waiting_past_the_pickup_bound_moves_to_a_served_fallback():
    moved = replan(ARM64_QUEUE, Arch.ARM64, Placement.CROSS_OK, _serving(N, C),
                   waited_s=BOUND + 1, pickup_bound_s=BOUND)
    assert moved is not None
    assert (moved.mode, moved.queue, moved.waiting) == (C, ARM64_CROSS, None)
    assert moved.placed == ("cross: no arm64 worker took it within 120 s; "
                            "cross-ok allows cross")


@pytest.mark.parametrize("waited_s", [0, BOUND - 1, BOUND])
def test_a_native_job_on_a_served_queue_is_not_moved_before_the_pickup_bound(waited_s):
    assert replan(ARM64_QUEUE, Arch.ARM64, Placement.CROSS_OK, _serving(N, C),
                  waited_s=waited_s, pickup_bound_s=BOUND) is None


def test_past_the_pickup_bound_cross_is_preferred_to_emulation():
    moved = replan(ARM64_QUEUE, Arch.ARM64, Placement.EMULATE_OK, _serving(N, C, E),
                   waited_s=BOUND + 1, pickup_bound_s=BOUND)
    assert moved is not None
    assert moved.queue == ARM64_CROSS


def test_past_the_pickup_bound_emulation_is_taken_when_it_is_the_only_fallback():
    moved = replan(ARM64_QUEUE, Arch.ARM64, Placement.EMULATE_OK, _serving(N, E),
                   waited_s=BOUND + 1, pickup_bound_s=BOUND)
    assert moved is not None
    assert (moved.mode, moved.queue) == (E, ARM64_EMULATED)


@pytest.mark.parametrize(
    ("placement", "served"),
    [(Placement.NATIVE, (N, C, E)), (Placement.CROSS_OK, (N, E)), (Placement.EMULATE_OK, (N,))],
)
def test_past_the_pickup_bound_a_native_job_stays_without_an_allowed_served_fallback(
    placement, served
):
    assert replan(ARM64_QUEUE, Arch.ARM64, placement, _serving(*served),
                  waited_s=10 * BOUND, pickup_bound_s=BOUND) is None


@pytest.mark.parametrize(("queue", "mode"), [(ARM64_CROSS, C), (ARM64_EMULATED, E)])
def test_a_job_on_a_served_fallback_queue_stays_however_long_it_waited(queue, mode):
    assert replan(queue, Arch.ARM64, Placement.EMULATE_OK, _serving(N, C, E),
                  waited_s=10 * BOUND, pickup_bound_s=BOUND) is None
    assert replan(queue, Arch.ARM64, Placement.EMULATE_OK, _serving(mode),
                  waited_s=1, pickup_bound_s=BOUND) is None
