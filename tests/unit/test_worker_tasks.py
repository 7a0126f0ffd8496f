"""The build task names its job on every log record made while it runs, Celery's own
"succeeded" line included; run eagerly on the fakes."""

import logging

import pytest
from fakes import FakeCrates, FakeDocker, FakeReporter, FakeStorage

from crossfarm.shared import keys
from crossfarm.shared.arch import Arch
from crossfarm.shared.broker import create_celery
from crossfarm.shared.logs import JobFilter, fields_of
from crossfarm.shared.wire import CargoSpec, JobMessage
from crossfarm.worker import tasks
from crossfarm.worker.pipeline import Toolbox
from crossfarm.worker.settings import WorkerSettings

JOB = JobMessage(job_id="j-0123456789abcdef", build_id="b-0123456789abcdef",
                 target="x86_64-unknown-linux-gnu", attempt=2, source="ab" * 32,
                 cargo=CargoSpec(), timeout_s=600, tenant="acme")


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.addFilter(JobFilter())
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def records():
    root = logging.getLogger()
    handler, level = Records(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler.records
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """One app for the module: Celery registers task names process-wide, so a second
    app registering the same names warns (an error under this suite's filterwarnings)."""
    app = create_celery("memory://", visibility_timeout_s=3600)
    settings = WorkerSettings(worker_name="w7", scratch_dir=tmp_path_factory.mktemp("scratch"))
    # The controller refuses the start: the job is not run, which the pipeline logs.
    tools = Toolbox(settings=settings, host=Arch.AMD64, docker=FakeDocker(),
                    storage=FakeStorage(), reporter=FakeReporter(proceed=False),
                    crates=FakeCrates())
    tasks.register(app, lambda: tools, lambda: None)
    return app


def test_every_record_of_a_build_task_names_its_job_celerys_success_line_too(app, records):
    task_id = keys.task_id(JOB.job_id, JOB.attempt)
    app.tasks[keys.BUILD_TASK].apply(args=[JOB.model_dump(mode="json")], task_id=task_id)
    named = {"build_id": JOB.build_id, "job_id": JOB.job_id, "attempt": 2, "worker": "w7",
             "tenant": "acme"}
    ours = [r for r in records if r.name.startswith("crossfarm.")]
    assert next(r.getMessage() for r in ours).startswith("building x86_64-unknown-linux-gnu")
    assert len(ours) >= 3  # building, not run (the refusal), ended
    celerys = [r for r in records if r.name == "celery.app.trace"]
    assert celerys
    assert task_id in celerys[0].getMessage()
    for record in ours + celerys:
        assert fields_of(record) == named, record.getMessage()


def test_after_the_task_records_name_no_job(app, records):
    app.tasks[keys.BUILD_TASK].apply(args=[JOB.model_dump(mode="json")],
                                     task_id=keys.task_id(JOB.job_id, JOB.attempt))
    logging.getLogger("crossfarm.worker.heartbeat").info("later")
    assert fields_of(records[-1]) == {}
