"""A real PostgreSQL server for the tests: Debian's `postgresql` binaries, a cluster made
with initdb in a fresh directory, listening on a free loopback port, one new database
per test (a new schema: see `schema`).

PostgreSQL refuses to run as root, and CI runs as root: the server then runs as the
`postgres` user the Debian package creates, in a directory that user owns (pytest's own
tmp dirs are root's, mode 0700, so the cluster lives in a directory of its own).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

#: where Debian installs each major version's server binaries (they are not on PATH)
_BINARIES = "/usr/lib/postgresql/*/bin"
_INSTALL = "apt-get install -y postgresql (make install does it)"


#: what the tests give a controller on PostgreSQL as CROSSFARM_SECRETS_KEY (SQLite keeps a
#: key file beside the database; a PostgreSQL farm must be given one)
SECRETS_KEY = "Vm9mZ2xhZ2VuLWtleS1mb3ItdGVzdHMtb25seS0xMjM="


def secrets_key(database_url: str) -> str | None:
    return SECRETS_KEY if database_url.startswith("postgresql") else None


class PostgresUnavailable(RuntimeError):
    """The server cannot be started here; the message says what to install or fix."""


def _bin_dir() -> Path:
    override = os.environ.get("CROSSFARM_TEST_PG_BIN")
    if override:
        return Path(override)
    found = sorted(glob.glob(_BINARIES), key=lambda p: int(p.split("/")[-2]))
    if not found:
        raise PostgresUnavailable(f"no PostgreSQL server binaries under {_BINARIES}: {_INSTALL}")
    return Path(found[-1])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One cluster and its server process; `database()` makes a new, empty database and
    returns its SQLAlchemy URL (driver psycopg 3)."""

    USER = "crossfarm"

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = _free_port()
        self._names = itertools.count(1)
        self._proc: subprocess.Popen[bytes] | None = None
        self._shared: str | None = None
        # Root may not run the server: run it as the Debian package's `postgres` user.
        self._as: dict[str, str] = {}
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root and there is no `postgres` user to run the server as: "
                    f"{_INSTALL}") from None
            self._as = {"user": "postgres", "group": "postgres"}
        self.dir = Path(tempfile.mkdtemp(prefix="crossfarm-pg-"))
        if self._as:
            shutil.chown(self.dir, **self._as)

    def start(self) -> None:
        data = self.dir / "data"
        self._run([str(self.bin / "initdb"), "-D", str(data), "-U", self.USER, "-A", "trust",
                   "-E", "UTF8", "--no-sync", "--no-instructions"])
        # fsync off: a test cluster that dies is thrown away, so durability buys nothing.
        with open(self.dir / "server.log", "ab") as log:  # the server keeps its own copy
            self._proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=200"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, **self._as)  # type: ignore[call-overload]
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.url("postgres", driver=False), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise PostgresUnavailable(
                        f"the test PostgreSQL server did not start ({exc}); its log: "
                        f"{(self.dir / 'server.log').read_text(errors='replace')[-2000:]}"
                    ) from None
                time.sleep(0.1)

    def url(self, database: str, driver: bool = True) -> str:
        scheme = "postgresql+psycopg" if driver else "postgresql"
        return f"{scheme}://{self.USER}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new empty database, as a controller would be pointed at."""
        name = f"db_{next(self._names)}"
        with psycopg.connect(self.url("postgres", driver=False), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def schema(self) -> str:
        """A URL whose connections see only a new, empty schema of one shared database:
        as empty as a new database to the store, in a millisecond where CREATE DATABASE
        takes a third of a second (the unit tier makes one per test)."""
        if self._shared is None:
            self._shared = self.database()
        name = f"test_{next(self._names)}"
        with psycopg.connect(self._shared.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return f"{self._shared}?options=-csearch_path%3D{name}"

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            # Immediate shutdown: no checkpoint, as the cluster is thrown away next.
            self._proc.send_signal(signal.SIGQUIT)
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=self.dir, **self._as)  # type: ignore[call-overload]
        if done.returncode != 0:
            raise PostgresUnavailable(f"{' '.join(argv)} failed: {done.stderr.strip()}")
