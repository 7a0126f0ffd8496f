"""Where the key sealing build variables comes from, and how a wrong one is refused:
real SQLite databases in a temporary directory."""

import stat

import pytest
from cryptography.fernet import Fernet

from crossfarm.controller.store import Store
from crossfarm.controller.store.builds import NewBuild, NewJob
from crossfarm.controller.store.vault import SecretsKeyError, Vault, open_vault
from crossfarm.shared.arch import Arch
from crossfarm.shared.ids import BuildId, JobId
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.wire import CargoSpec

BUILD = BuildId("b-0123456789abcdef")
X86 = "x86_64-unknown-linux-gnu"


def _add_build(store, env):
    store.builds.add(NewBuild(
        build_id=BUILD, source="0" * 64, cargo=CargoSpec(), timeout_s=60, submitter=None,
        env=env, jobs=[NewJob(
            job_id=JobId("j-000000000000000a"), target=X86, arch=Arch.AMD64,
            queue=QueueKey.parse("crossfarm.builds.amd64"), placement="native",
            placed="native", waiting=None, wait_limit_s=None)],
    ))


@pytest.fixture
def db(tmp_path):
    return tmp_path / "state" / "crossfarm.db"


def test_a_sqlite_farm_without_a_key_makes_one_beside_its_database_for_its_owner_only(db):
    Store(f"sqlite:///{db}").close()
    key_file = db.with_name("crossfarm.db.key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    Fernet(key_file.read_bytes())  # a well-formed key
    assert [p.name for p in db.parent.iterdir() if p.name.startswith(".")] == []


def test_a_sqlite_farm_reads_its_values_back_after_a_restart_with_its_key_file(db):
    store = Store(f"sqlite:///{db}")
    _add_build(store, {"all": {"TOKEN": "s3cret"}})
    store.close()
    reopened = Store(f"sqlite:///{db}")
    try:
        assert reopened.builds.settings(BUILD, X86).env == {"TOKEN": "s3cret"}
    finally:
        reopened.close()


def test_a_key_set_in_the_settings_is_used_and_no_key_file_is_made(db):
    key = Fernet.generate_key().decode()
    store = Store(f"sqlite:///{db}", key)
    _add_build(store, {"all": {"TOKEN": "s3cret"}})
    store.close()
    assert not db.with_name("crossfarm.db.key").exists()
    reopened = Store(f"sqlite:///{db}", key)
    try:
        assert reopened.builds.settings(BUILD, X86).env == {"TOKEN": "s3cret"}
    finally:
        reopened.close()


def test_a_database_opened_with_another_key_is_refused_at_start_with_what_to_do(db):
    Store(f"sqlite:///{db}", Fernet.generate_key().decode()).close()
    with pytest.raises(SecretsKeyError, match="sealed with another secrets key") as exc:
        Store(f"sqlite:///{db}", Fernet.generate_key().decode())
    assert exc.value.source == "CROSSFARM_SECRETS_KEY"
    assert "start the controller with the key it was made with" in str(exc.value)


def test_a_database_whose_key_file_was_replaced_is_refused(db):
    Store(f"sqlite:///{db}").close()
    db.with_name("crossfarm.db.key").write_bytes(Fernet.generate_key())
    with pytest.raises(SecretsKeyError, match=r"crossfarm\.db\.key"):
        Store(f"sqlite:///{db}")


def test_values_sealed_with_another_key_name_the_build_they_belong_to():
    token = Vault(Fernet.generate_key(), "one").seal({"all": {"TOKEN": "s3cret"}})
    with pytest.raises(SecretsKeyError, match=f"variables of build {BUILD} were sealed"):
        Vault(Fernet.generate_key(), "another").open(token, BUILD)


def test_a_malformed_key_is_refused_with_how_to_make_one(db):
    with pytest.raises(SecretsKeyError, match=r"not a Fernet key.*Fernet\.generate_key"):
        Store(f"sqlite:///{db}", "correct horse battery staple")
    assert not db.exists()


def test_a_key_file_others_may_read_is_refused(db):
    Store(f"sqlite:///{db}").close()
    key_file = db.with_name("crossfarm.db.key")
    key_file.chmod(0o640)
    with pytest.raises(SecretsKeyError, match=r"may be read by others \(mode 640\)"):
        Store(f"sqlite:///{db}")


def test_a_postgresql_farm_without_a_key_is_refused_before_it_connects():
    with pytest.raises(SecretsKeyError, match="CROSSFARM_SECRETS_KEY is not set: a postgresql"):
        Store("postgresql+psycopg://crossfarm@127.0.0.1:1/nowhere")


def test_an_in_memory_database_gets_a_key_of_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    vault = open_vault("sqlite://", None)
    assert vault.open(vault.seal({"all": {"A": "b"}}), BUILD) == {"all": {"A": "b"}}
    assert list(tmp_path.iterdir()) == []
