import dataclasses
from itertools import combinations

import pytest

from crossfarm.shared import keys
from crossfarm.shared.arch import Arch, BuildMode, target_arch
from crossfarm.shared.errors import UnsupportedTarget
from crossfarm.shared.ids import BuildId, JobId, SourceDigest

BUILD = BuildId("b-0123456789abcdef")
OTHER_BUILD = BuildId("b-fedcba9876543210")
X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"


@pytest.mark.parametrize(
    ("arch", "queue"),
    [(Arch.AMD64, "crossfarm.builds.amd64"), (Arch.ARM64, "crossfarm.builds.arm64")],
)
def test_each_architecture_has_its_own_queue(arch, queue):
    assert keys.QueueKey(arch).name == queue


@pytest.mark.parametrize(
    ("arch", "mode", "queue"),
    [
        (Arch.AMD64, BuildMode.CROSS, "crossfarm.builds.amd64.cross"),
        (Arch.ARM64, BuildMode.CROSS, "crossfarm.builds.arm64.cross"),
        (Arch.ARM64, BuildMode.EMULATED, "crossfarm.builds.arm64.emulated"),
        (Arch.ARM64, BuildMode.NATIVE, "crossfarm.builds.arm64"),
    ],
)
def test_a_queue_is_named_by_its_architecture_and_mode_and_native_is_plain(arch, mode, queue):
    assert keys.QueueKey(arch, mode).name == queue


@pytest.mark.parametrize("mode", list(BuildMode))
@pytest.mark.parametrize("arch", list(Arch))
def test_a_queue_name_parses_back_to_its_architecture_and_mode(arch, mode):
    assert keys.QueueKey.parse(keys.QueueKey(arch, mode).name) == keys.QueueKey(arch, mode)


def test_every_architecture_and_mode_has_a_queue_of_its_own():
    names = [keys.QueueKey(arch, mode).name for arch in Arch for mode in BuildMode]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    "queue",
    [
        "celery",
        "unknown",
        "",
        "crossfarm.builds",
        "crossfarm.jobs.arm64",
        "other.builds.arm64",
        "crossfarm.builds.arm64.cross.extra",
        "crossfarm.builds.arm64.native",
    ],
)
def test_a_name_that_is_not_a_crossfarm_build_queue_is_refused(queue):
    with pytest.raises(ValueError, match="is not a crossfarm build queue"):
        keys.QueueKey.parse(queue)


@pytest.mark.parametrize(
    "queue", ["crossfarm.builds.riscv64", "crossfarm.builds.riscv64.cross", "crossfarm.builds."]
)
def test_a_queue_of_an_unknown_architecture_is_refused(queue):
    with pytest.raises(ValueError, match="unknown architecture"):
        keys.QueueKey.parse(queue)


@pytest.mark.parametrize(
    "queue",
    ["crossfarm.builds.arm64.qemu", "crossfarm.builds.arm64.CROSS", "crossfarm.builds.arm64."],
)
def test_a_queue_of_an_unknown_mode_is_refused(queue):
    with pytest.raises(ValueError):  # noqa: PT011 - BuildMode's own message
        keys.QueueKey.parse(queue)


# Arch.parse takes aliases for people's input, but a queue is a wire name: a worker
# advertising crossfarm.builds.aarch64 would count as arm64 capacity while every arm64
# job goes to crossfarm.builds.arm64, which it does not consume.
@pytest.mark.parametrize(
    "queue",
    ["crossfarm.builds.aarch64", "crossfarm.builds.x86_64.cross", "crossfarm.builds.ARM64"],
)
def test_a_queue_name_the_key_never_makes_is_refused(queue):
    with pytest.raises(ValueError):  # noqa: PT011 - any refusal will do
        keys.QueueKey.parse(queue)


# Folded in from the old controller/routing.py: a target's native queue is its arch's.
@pytest.mark.parametrize(
    ("target", "queue"),
    [("x86_64-unknown-linux-gnu", "crossfarm.builds.amd64"),
     ("aarch64-unknown-linux-gnu", "crossfarm.builds.arm64")],
)
def test_a_target_s_native_queue_is_the_plain_queue_of_its_architecture(target, queue):
    assert keys.QueueKey(target_arch(target)).name == queue


@pytest.mark.parametrize(
    "target", ["aarch64-apple-darwin", "x86_64-unknown-linux-musl", "X86_64-unknown-linux-gnu"]
)
def test_an_unsupported_target_has_no_queue(target):
    with pytest.raises(UnsupportedTarget) as exc:
        keys.QueueKey(target_arch(target))
    assert exc.value.target == target
    assert exc.value.supported == ["aarch64-unknown-linux-gnu", "x86_64-unknown-linux-gnu"]


def test_a_queue_key_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        keys.QueueKey(Arch.AMD64).mode = BuildMode.CROSS  # type: ignore[misc]


def test_a_queue_key_on_the_wire_is_its_name():
    from crossfarm.shared.wire import ArchSummary
    summary = ArchSummary(arch=Arch.ARM64, queue=keys.QueueKey(Arch.ARM64, BuildMode.CROSS),
                          workers_online=0, queue_depth=0, oldest_waiting=None)
    assert summary.model_dump(mode="json")["queue"] == "crossfarm.builds.arm64.cross"
    assert ArchSummary.model_validate_json(summary.model_dump_json()) == summary


@pytest.mark.parametrize("attempt", [1, 2, 10])
def test_a_task_id_parses_back_to_its_job_and_attempt(attempt):
    job = JobId("j-0123456789abcdef")
    assert keys.task_id(job, attempt) == f"{job}-{attempt}"
    assert keys.parse_task_id(keys.task_id(job, attempt)) == (job, attempt)


@pytest.mark.parametrize("text", ["j-0123456789abcdef", "-1", "j-01-x", ""])
def test_a_text_that_is_not_a_task_id_is_refused(text):
    with pytest.raises(ValueError, match="is not a crossfarm task id"):
        keys.parse_task_id(text)


def test_a_container_s_labels_name_its_task_and_worker():
    job = JobId("j-0123456789abcdef")
    labels = keys.container_labels(job, 3, "w1")
    assert keys.labelled_task(labels) == keys.task_id(job, 3)
    assert set(keys.worker_selector("w1")) <= {f"{k}={v}" for k, v in labels.items()}
    assert not set(keys.worker_selector("w2")) <= {f"{k}={v}" for k, v in labels.items()}


def test_a_container_without_crossfarm_labels_belongs_to_no_task():
    assert keys.labelled_task({}) is None
    assert keys.labelled_task({"io.crossfarm.job": "j-0123456789abcdef"}) is None


def test_no_attempt_prefix_contains_another():
    prefixes = [
        keys.job_prefix(build, target, attempt)
        for build in (BUILD, OTHER_BUILD)
        for target in (X86, ARM)
        for attempt in range(1, 25)
    ]
    assert len(set(prefixes)) == len(prefixes)
    for a, b in combinations(prefixes, 2):
        assert not a.startswith(b)
        assert not b.startswith(a)


def test_attempt_one_and_attempt_ten_do_not_share_a_prefix():
    one = keys.job_prefix(BUILD, X86, 1)
    ten = keys.job_prefix(BUILD, X86, 10)
    assert not ten.startswith(one)
    assert not keys.manifest_key(BUILD, X86, 10).startswith(one)


def test_the_manifest_is_under_the_job_prefix():
    prefix = keys.job_prefix(BUILD, ARM, 2)
    assert keys.manifest_key(BUILD, ARM, 2).startswith(prefix)
    assert keys.manifest_key(BUILD, ARM, 2).endswith("manifest.json")


def test_an_artifact_is_under_the_job_prefix_with_its_name_last():
    key = keys.artifact_key(BUILD, ARM, 3, "hello")
    assert key.startswith(keys.job_prefix(BUILD, ARM, 3))
    assert key.endswith("/hello")


def test_an_artifact_cannot_collide_with_the_manifest_or_log():
    prefix = keys.job_prefix(BUILD, X86, 1)
    artifact = keys.artifact_key(BUILD, X86, 1, "manifest.json")
    assert artifact.startswith(prefix)
    assert artifact != keys.manifest_key(BUILD, X86, 1)
    assert keys.artifact_key(BUILD, X86, 1, "build.log") != keys.log_key(BUILD, X86, 1)


def test_the_log_is_under_the_job_prefix():
    assert keys.log_key(BUILD, X86, 1).startswith(keys.job_prefix(BUILD, X86, 1))


def test_prefixes_start_with_the_build():
    assert keys.job_prefix(BUILD, X86, 1).startswith(f"builds/{BUILD}/")


def test_a_blob_is_named_by_its_digest_under_a_two_digit_fan_out():
    digest = "ab" + "cd" * 31
    assert keys.blob_key(digest) == f"blobs/ab/{digest}"


def test_a_tree_is_named_by_its_digest():
    digest = SourceDigest("ab" * 32)
    assert keys.tree_key(digest) == f"trees/{digest}.json"


def test_blobs_and_trees_never_share_a_key():
    digest = "ab" * 32
    assert keys.blob_key(digest) != keys.tree_key(SourceDigest(digest))
    assert not keys.tree_key(SourceDigest(digest)).startswith("blobs/")


def test_redis_keys_name_their_build_or_job():
    job = JobId("j-0123456789abcdef")
    assert BUILD in keys.events_stream(BUILD)
    assert keys.events_stream(BUILD) != keys.events_stream(OTHER_BUILD)
    assert job in keys.cancel_flag(job)


@pytest.mark.parametrize("attempt", [1, 2, 10, 123])
@pytest.mark.parametrize("target", [X86, ARM])
def test_every_output_key_parses_back_to_its_build_target_and_attempt(target, attempt):
    for key in (keys.artifact_key(BUILD, target, attempt, "hello"),
                keys.manifest_key(BUILD, target, attempt),
                keys.log_key(BUILD, target, attempt)):
        assert keys.parse_job_key(key) == (BUILD, target, attempt)


@pytest.mark.parametrize(
    "key",
    [
        "blobs/ab/abcdef",
        f"builds/{BUILD}/{X86}/manifest.json",
        f"builds/{BUILD}/{X86}/attempt-/manifest.json",
        f"builds/{BUILD}/{X86}/attempt-01/manifest.json",
        f"builds/{BUILD}/{X86}/attempt-x/manifest.json",
        f"builds/{BUILD}/{X86}/attempt-\u0661/manifest.json",
        f"builds/{BUILD}/{X86}/attempt-1",
    ],
)
def test_a_key_that_is_not_a_build_output_is_refused(key):
    with pytest.raises(ValueError):  # noqa: PT011 - any refusal will do
        keys.parse_job_key(key)
