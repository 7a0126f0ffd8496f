"""Fixtures shared by every tier. The integration tier's real services live in
tests/integration/conftest.py.

`database_url` runs a test once per database the controller supports: SQLite (a new
file) and PostgreSQL (a new database on a real server these tests start). A missing
PostgreSQL is a failure, never a skip: its tests are the proof that the store works
there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import PostgresServer, PostgresUnavailable


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, started on first use."""
    try:
        server = PostgresServer()
        server.start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db.sqlite"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.schema()
