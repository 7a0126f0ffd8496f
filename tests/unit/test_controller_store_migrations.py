"""The database's revisions (controller/store/migrations), on SQLite and on a real
PostgreSQL server: an empty database is made at the head, the revisions make exactly the
models' tables, a database behind is refused with the command to run, and that command
(the real `crossfarm-controller migrate`) upgrades it with its data kept."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from cryptography.fernet import Fernet
from pydantic import ValidationError
from sqlalchemy import MetaData, create_engine, inspect, text

from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store import Store, migrations
from crossfarm.controller.store.jobs import Outcome
from crossfarm.controller.store.schema import SCHEMA_VERSION, Base
from crossfarm.shared.arch import BuildMode
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import WorkerHeartbeat

KEY = Fernet.generate_key().decode()
BUILD = "b-00000000000000f1"
JOB = "j-00000000000000f1"
HEARTBEAT = WorkerHeartbeat(
    hostname="arm1", arch="arm64", queues={"crossfarm.builds.arm64": BuildMode.NATIVE},
    cpus=4, memory_bytes=8 * 1024**3, builder_image="crossfarm/builder:1",
    targets=["aarch64-unknown-linux-gnu"], version="0.1.0", concurrency=1)
#: where the revisions live in the package (an installed wheel has them there too)
SCRIPTS = Path(migrations.__file__).parent


_ENGINES = []


@pytest.fixture(autouse=True)
def _dispose_engines():
    """The tests' own engines close their connections (open ones warn, and warnings fail)."""
    yield
    while _ENGINES:
        _ENGINES.pop().dispose()


def _engine(url):
    engine = create_engine(url)
    _ENGINES.append(engine)
    return engine


def _store(url, migrate=False):
    return Store(url, KEY if url.startswith("postgresql") else None, migrate=migrate)


def _alembic(conn):
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = conn
    return config


def _at(url, revision):
    """A database made by the revisions up to `revision`, as an older crossfarm left it."""
    engine = _engine(url)
    with engine.begin() as conn:
        command.upgrade(_alembic(conn), revision)
    return engine


def _revision(engine):
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _columns(engine, table):
    return {column["name"] for column in inspect(engine).get_columns(table)}


def _fill_at_15(engine):
    """A build, its running job and a worker, written as crossfarm at schema 15 did."""
    tables = MetaData()
    tables.reflect(engine)
    when = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(tables.tables["builds"].insert(), [{
            "id": BUILD, "created_at": when, "source": "ab" * 32,
            "cargo": {"profile": "release", "features": ["tls"]}, "timeout_s": 900,
            "env_names": ["RUST_LOG"], "env_sealed": None, "submitter": "ada@acme",
            "tenant": "acme"}])
        conn.execute(tables.tables["jobs"].insert(), [{
            "id": JOB, "build_id": BUILD, "tenant": "acme",
            "target": "aarch64-unknown-linux-gnu", "arch": "arm64",
            "queue": "crossfarm.builds.arm64", "state": "running", "attempt": 2,
            "worker": "w-arm", "placement": "native", "placed": "native: an arm64 worker",
            "queued_at": when, "sent_at": when, "started_at": when}])
        conn.execute(tables.tables["workers"].insert(), [{
            "name": "w-arm", "info": HEARTBEAT.model_dump(mode="json"), "started_at": when,
            "last_seen": when, "drain": True}])


def _migrate_command(url):
    """The real console command, as an operator runs it."""
    env = {**os.environ, "CROSSFARM_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "crossfarm.controller", "migrate"],
                          env=env, capture_output=True, text=True, timeout=120)


def test_the_revisions_form_one_line_whose_head_is_schema_version():
    scripts = ScriptDirectory(str(SCRIPTS))
    assert scripts.get_heads() == [str(SCHEMA_VERSION)]
    assert [r.revision for r in scripts.walk_revisions()] == ["19", "18", "17", "16", "15"]
    assert migrations.head() == str(SCHEMA_VERSION)


def test_a_new_database_is_made_at_the_head_revision(database_url):
    _store(database_url).close()
    assert _revision(_engine(database_url)) == migrations.head()


def test_the_revisions_make_exactly_the_tables_the_models_describe(database_url):
    # A new database is made from the models at once; an old one gets there revision by
    # revision. The two must not differ, or an upgraded farm runs on another schema.
    engine = _at(database_url, "head")
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []


def test_a_database_behind_is_refused_naming_the_command_that_upgrades_it(database_url):
    _at(database_url, "15")
    with pytest.raises(migrations.SchemaError, match="crossfarm-controller migrate") as refused:
        _store(database_url)
    assert (refused.value.revision, refused.value.head) == ("15", migrations.head())


def test_migrate_upgrades_a_revision_15_database_and_keeps_its_builds(database_url):
    engine = _at(database_url, "15")
    _fill_at_15(engine)
    assert "routed_to" not in _columns(engine, "jobs")

    done = _migrate_command(database_url)

    assert done.returncode == 0, done.stderr
    assert "upgraded from schema revision 15 to 19" in done.stdout
    assert _revision(engine) == "19"
    store = _store(database_url)
    try:
        build = store.builds.get(BuildId(BUILD), "acme")
        assert (build.submitter, build.cargo.features, build.env_names) == (
            "ada@acme", ["tls"], ["RUST_LOG"])
        job = store.jobs.get(JobId(JOB))
        assert (job.view.state, job.view.attempt, job.view.worker) == (
            BuildState.RUNNING, 2, "w-arm")
        assert job.routed_to is None
        assert store.builds.settings(BuildId(BUILD), job.view.target).project is None
        assert [(w.name, w.drain) for w in store.workers.all()] == [("w-arm", True)]
        # and the upgraded database takes the new code's writes
        assert store.jobs.finish(JobId(JOB), 2, Outcome(BuildState.SUCCEEDED, exit_code=0))
    finally:
        store.close()


def test_migrate_on_a_database_at_the_head_changes_nothing_and_says_so(database_url):
    _store(database_url).close()
    done = _migrate_command(database_url)
    assert done.returncode == 0, done.stderr
    assert "at schema revision 19 already" in done.stdout


def test_a_controller_told_to_migrate_on_start_upgrades_a_database_behind(database_url):
    engine = _at(database_url, "15")
    _fill_at_15(engine)
    _store(database_url, migrate=True).close()
    assert _revision(engine) == "19"
    assert "project" in _columns(engine, "builds")


def _made_before_migrations(database_url, version):
    """A database as crossfarm left it before Alembic: the tables of `version`, no
    alembic_version, the version in crossfarm_meta."""
    engine = _at(database_url, version)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("INSERT INTO crossfarm_meta (key, value) "
                          "VALUES ('schema_version', :v)"), {"v": version})
    return engine


def test_a_database_made_before_migrations_is_adopted_at_its_schema_version(database_url):
    engine = _made_before_migrations(database_url, "15")
    _fill_at_15(engine)
    with pytest.raises(migrations.SchemaError, match="at schema revision 15"):
        _store(database_url)
    assert migrations.upgrade(database_url) == migrations.Upgraded("15", "19")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT key FROM crossfarm_meta")).scalars().all() == []
    store = _store(database_url)
    assert store.jobs.get(JobId(JOB)).view.worker == "w-arm"
    store.close()


def test_a_database_made_before_migrations_at_its_last_version_upgrades_from_there(
        database_url):
    engine = _made_before_migrations(database_url, "16")
    with pytest.raises(migrations.SchemaError, match="at schema revision 16"):
        _store(database_url)
    assert _revision(engine) is None  # refused: not even stamped
    assert migrations.upgrade(database_url) == migrations.Upgraded("16", "19")


def test_a_database_with_tables_and_no_known_version_is_refused(database_url):
    engine = _engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE builds (id VARCHAR(32) PRIMARY KEY)"))
    with pytest.raises(migrations.SchemaError, match="no schema revision crossfarm knows"):
        _store(database_url)


def test_a_database_a_newer_crossfarm_made_is_refused(database_url):
    engine = _at(database_url, "head")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '99'"))
    with pytest.raises(migrations.SchemaError, match="a newer crossfarm made it") as refused:
        _store(database_url)
    assert refused.value.revision == "99"


def test_controllers_starting_together_on_an_empty_database_make_it_once(database_url):
    errors = []

    def start():
        try:
            migrations.prepare(database_url)
        except Exception as exc:  # reported below, with the others
            errors.append(exc)

    starting = [threading.Thread(target=start) for _ in range(4)]
    for thread in starting:
        thread.start()
    for thread in starting:
        thread.join()
    assert errors == []
    engine = _engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() \
            == [migrations.head()]


def test_the_refusal_names_the_database_without_its_password(postgres):
    url = postgres.database().replace("crossfarm@", "crossfarm:hunter2@")
    _at(url, "15")
    with pytest.raises(migrations.SchemaError) as refused:
        _store(url)
    assert "hunter2" not in str(refused.value)
    assert "***" in str(refused.value)


def test_an_in_memory_sqlite_database_is_refused_with_what_to_give():
    with pytest.raises(ValueError, match="give a file"):
        migrations.prepare("sqlite://")


def test_the_controller_refuses_to_serve_a_database_behind_and_names_the_command(database_url):
    _at(database_url, "15")
    env = {**os.environ, "CROSSFARM_DATABASE_URL": database_url,
           "CROSSFARM_SECRETS_KEY": KEY}
    done = subprocess.run([sys.executable, "-m", "crossfarm.controller"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"at schema revision 15; this controller needs {SCHEMA_VERSION}" in done.stderr
    assert "crossfarm-controller migrate" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_plain_postgresql_url_means_the_psycopg_driver(postgres):
    url = postgres.database().replace("postgresql+psycopg://", "postgresql://")
    store = Store(url, KEY)
    try:
        assert store.db.engine.dialect.driver == "psycopg"
    finally:
        store.close()


@pytest.mark.parametrize("url", ["mysql://db/crossfarm", "crossfarm.db",
                                 "postgresql+psycopg2://ops:hunter2@db/crossfarm"])
def test_a_database_url_crossfarm_does_not_run_on_is_refused_naming_the_two_it_does(url):
    with pytest.raises(ValidationError, match="must be sqlite:///PATH or postgresql://") as no:
        ControllerSettings(database_url=url)
    assert "hunter2" not in str(no.value)


def test_an_unreachable_database_is_named_without_its_password():
    with pytest.raises(migrations.Unreachable, match="check CROSSFARM_DATABASE_URL") as no:
        migrations.prepare("postgresql://ops:hunter2@127.0.0.1:1/crossfarm")
    assert "hunter2" not in str(no.value)
