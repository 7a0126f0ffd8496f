"""run_job's refusals: a job this worker must not build is reported and failed before
any container or download happens (the Docker stand-in has no methods at all)."""

import pytest

from crossfarm.shared import keys
from crossfarm.shared.arch import Arch, BuildMode
from crossfarm.shared.errors import BuildCancelled, StorageError
from crossfarm.shared.ids import BuildId
from crossfarm.shared.states import BuildState
from crossfarm.shared.storage import PendingUpload
from crossfarm.shared.tree import tree_digest
from crossfarm.shared.wire import JobMessage, SourceLimits, SourceTree, StartVerdict, TreeEntry
from crossfarm.worker.pipeline import Toolbox, _publish, run_job
from crossfarm.worker.settings import WorkerSettings

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"
BUILD = "b-0123456789abcdef"
JOB = "j-0123456789abcdef"


class FakeReporter:
    """Records what the worker tells the controller; says go ahead unless told not to."""

    def __init__(self, proceed=True):
        self.verdict = StartVerdict(proceed=proceed, reason=None if proceed else "stale")
        self.starts, self.outcomes, self.lines = [], [], []

    def started(self, job_id, report):
        self.starts.append((job_id, report))
        return self.verdict

    def finished(self, job_id, report):
        self.outcomes.append((job_id, report))

    def line(self, build_id, target, text):
        self.lines.append(text)

    def cancelled(self, job_id):
        return False


class FakeStorage:
    def __init__(self):
        self.objects = {}

    def put_bytes(self, key, data, content_type="application/octet-stream"):
        self.objects[key] = data


class NoDocker:
    """Any use is a test failure: a refused job must never reach a container."""


def _job(target):
    return JobMessage(job_id=JOB, build_id=BUILD, target=target, attempt=1, source="ab" * 32,
                      profile="dev", features=[], all_features=False, no_default_features=False,
                      cargo_args=[], timeout_s=600)


def _tools(tmp_path, reporter):
    # an amd64 worker with an arm64 cross toolchain
    settings = WorkerSettings(worker_name="w1", cross_arches=[Arch.ARM64],
                              scratch_dir=tmp_path / "scratch")
    return Toolbox(settings=settings, host=Arch.AMD64, docker=NoDocker(),
                   storage=FakeStorage(), reporter=reporter)


@pytest.mark.parametrize(
    ("target", "queue", "mode", "reason"),
    [
        (ARM, "crossfarm.builds.arm64", BuildMode.NATIVE,
         "this worker does not serve crossfarm.builds.arm64"),
        (ARM, "crossfarm.builds.arm64.emulated", BuildMode.EMULATED,
         "this worker does not serve crossfarm.builds.arm64.emulated"),
        (X86, "crossfarm.builds.arm64.cross", BuildMode.CROSS,
         f"{X86} does not belong on crossfarm.builds.arm64.cross"),
    ],
)
def test_a_job_this_worker_must_not_build_is_reported_and_failed_with_the_reason(
    tmp_path, target, queue, mode, reason
):
    reporter = FakeReporter()
    tools = _tools(tmp_path, reporter)

    assert run_job(tools, _job(target), consumed_from=queue) is BuildState.FAILED

    [(_, start)] = reporter.starts
    assert (start.mode, start.consumed_from, start.worker) == (mode, queue, "w1")
    [(_, outcome)] = reporter.outcomes
    assert outcome.state is BuildState.FAILED
    assert outcome.reason.startswith(reason)
    assert any(line.startswith(f"crossfarm: failed: {reason}") for line in reporter.lines)
    log = tools.storage.objects[keys.log_key(BuildId(BUILD), target, 1)].decode()
    assert reason in log


# worker/tasks.py passes consumed_from="unknown" when Celery's delivery info has no
# routing key; job_mode refuses it as a BuildError, which run_job must report like any
# other refusal rather than crash.
@pytest.mark.parametrize("queue", ["unknown", "celery"])
def test_a_job_from_a_queue_that_is_not_crossfarms_is_failed_not_crashed(tmp_path, queue):
    reporter = FakeReporter()

    assert run_job(_tools(tmp_path, reporter), _job(X86), consumed_from=queue) is (
        BuildState.FAILED)

    [(_, outcome)] = reporter.outcomes
    assert "unknown queue" in outcome.reason


def test_a_job_the_controller_says_not_to_run_is_dropped_without_an_outcome(tmp_path):
    reporter = FakeReporter(proceed=False)
    tools = _tools(tmp_path, reporter)

    assert run_job(tools, _job(ARM), consumed_from="crossfarm.builds.arm64") is None

    assert reporter.outcomes == []
    assert tools.storage.objects == {}


class BrokenDocker:
    """An engine that fails in a way no adapter foresaw."""

    def has_image(self, name):
        raise RuntimeError("engine socket vanished")


def test_an_unexpected_failure_ends_the_job_as_failed_with_the_reason(tmp_path):
    reporter = FakeReporter()
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch")
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=BrokenDocker(),
                    storage=FakeStorage(), reporter=reporter)

    state = run_job(tools, _job(X86), consumed_from=keys.QueueKey(Arch.AMD64).name)

    assert state is BuildState.FAILED
    [(_, outcome)] = reporter.outcomes
    assert outcome.reason == "worker error: RuntimeError: engine socket vanished"


class UploadingStorage(FakeStorage):
    """Holds unfinished multipart uploads, as a store does after an upload was cut off."""

    def __init__(self, pending):
        super().__init__()
        self.pending, self.aborted = list(pending), []

    def pending_uploads(self, prefix):
        return [p for p in self.pending if p.key.startswith(prefix)]

    def abort_upload(self, upload):
        self.pending.remove(upload)
        self.aborted.append(upload.key)

    def put_file(self, key, path, sha256):
        self.objects[key] = path.read_bytes()


def test_publishing_aborts_this_attempts_unfinished_uploads_first_and_no_others(tmp_path):
    mine = keys.artifact_key(BuildId(BUILD), X86, 1, "hello")
    storage = UploadingStorage([
        PendingUpload(mine, "u1"),
        PendingUpload(keys.artifact_key(BuildId(BUILD), X86, 2, "hello"), "u2"),
        PendingUpload(keys.artifact_key(BuildId(BUILD), ARM, 1, "hello"), "u3"),
    ])
    binary = tmp_path / "hello"
    binary.write_bytes(b"\x7fELF")

    manifest = _publish(storage, _job(X86), [binary], lambda: None)

    assert storage.aborted == [mine]
    assert storage.objects[mine] == b"\x7fELF"
    assert [a.name for a in manifest.artifacts] == ["hello"]
    assert list(storage.objects)[-1] == keys.manifest_key(BuildId(BUILD), X86, 1)


@pytest.mark.parametrize("reason", ["cancelled by request", "superseded by attempt 2"])
def test_a_job_stopped_while_its_artifacts_upload_publishes_no_manifest(tmp_path, reason):
    storage = UploadingStorage([])
    binary = tmp_path / "hello"
    binary.write_bytes(b"\x7fELF")

    with pytest.raises(BuildCancelled, match=reason):
        _publish(storage, _job(X86), [binary], lambda: reason)

    assert keys.manifest_key(BuildId(BUILD), X86, 1) not in storage.objects


class ImageOnlyDocker:
    """The builder image is there; nothing else may be used."""

    def has_image(self, name):
        return True


class UnreachableStorage(FakeStorage):
    def get_bytes(self, key):
        raise StorageError(f"object store unreachable ({key}): connection refused")


class LapsedLease:
    def lapsed(self):
        return "cut off from the controller for 61 s"


def test_a_worker_cut_off_past_its_lease_abandons_the_job_and_reports_no_outcome(tmp_path):
    reporter = FakeReporter()
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch")
    storage = UnreachableStorage()
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=ImageOnlyDocker(),
                    storage=storage, reporter=reporter, lease=LapsedLease())

    assert run_job(tools, _job(X86), consumed_from=keys.QueueKey(Arch.AMD64).name) is None

    assert len(reporter.starts) == 1
    assert reporter.outcomes == []  # the controller re-runs it; no verdict from here
    log = storage.objects[keys.log_key(BuildId(BUILD), X86, 1)].decode()
    assert "crossfarm: abandoned: cut off from the controller for 61 s" in log


class TreeOnlyStorage(FakeStorage):
    """Holds one tree; any other object is missing."""

    def __init__(self, tree):
        super().__init__()
        self.tree = tree

    def get_bytes(self, key):
        if key == keys.tree_key(tree_digest(self.tree)):
            return self.tree.model_dump_json().encode()
        raise StorageError(f"{key} is missing", retryable=False)


@pytest.mark.parametrize(("limits", "refused"), [
    (SourceLimits(max_files=2, max_file_bytes=100, max_total_bytes=1000), True),
    (SourceLimits(max_files=3, max_file_bytes=100, max_total_bytes=1000), False),
    (None, False),  # an older controller's job: the default limits
])
def test_the_worker_checks_the_tree_against_the_limits_the_job_carries(tmp_path, limits,
                                                                        refused):
    tree = SourceTree(entries=[TreeEntry(path=f"f{n}", kind="file", sha256=f"{n}" * 64, size=1)
                               for n in range(3)])
    reporter = FakeReporter()
    settings = WorkerSettings(worker_name="w1", scratch_dir=tmp_path / "scratch",
                              storage_retry_s=0)
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=ImageOnlyDocker(),
                    storage=TreeOnlyStorage(tree), reporter=reporter)
    job = _job(X86).model_copy(update={"source": tree_digest(tree), "limits": limits})

    assert run_job(tools, job, consumed_from=keys.QueueKey(Arch.AMD64).name) is BuildState.FAILED

    [(_, outcome)] = reporter.outcomes  # failed either way: the blobs are missing
    assert ("3 files; the limit is 2" in outcome.reason) is refused, outcome.reason
