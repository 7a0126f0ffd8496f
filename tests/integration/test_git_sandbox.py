"""Git sources are fetched in a sandbox: the worker's fetch, on the real Docker engine
with the real fetcher image, against git servers this test starts on loopback.

The fetcher container has no network and none of the farm's credentials; its only way
out is the worker's egress proxy, which reaches the URL's own host and port and nothing
else. Each hostile fetch is followed by a normal one that works.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from polling import until

from crossfarm.shared.wire import FetchMessage, FetchReport, SourceLimits
from crossfarm.worker.gitfetch import UNREADABLE

FETCHER_IMAGE = "crossfarm/fetcher:1"
LOOPBACK = ["127.0.0.0/8"]  # the test's servers: a fetch may reach them only if allowed
LIMITS = SourceLimits(max_files=1000, max_file_bytes=8 << 20, max_total_bytes=64 << 20)
#: What the worker's environment holds and a fetch must never see.
FARM_SECRET = "farm-secret-" + secrets.token_hex(8)


#: A worker's fetch, run in a process of its own as on a worker (the Docker client's
#: sockets are that process's). argv: settings JSON, message JSON. Prints the report and
#: whether the pack it names was stored.
_FETCH = """
import json, sys
from fakes import FakeStorage
from crossfarm.shared import keys
from crossfarm.shared.wire import FetchMessage
from crossfarm.worker.container import Docker
from crossfarm.worker.egress import parse_networks
from crossfarm.worker.gitfetch import FetchTools, fetch_source
from crossfarm.worker.settings import WorkerSettings

class Replies:
    def reply(self, key, body, ttl_s=600):
        pass

config = json.loads(sys.argv[1])
allow = config.pop("allow")
storage = FakeStorage()
tools = FetchTools(settings=WorkerSettings(**config), docker=Docker(), storage=storage,
                   replies=Replies(), networks=parse_networks(allow))
report = fetch_source(tools, FetchMessage.model_validate_json(sys.argv[2]))
stored = report.pack is not None and keys.pack_key(report.pack) in storage.objects
print(json.dumps({"report": report.model_dump(mode="json"), "stored": stored}))
"""


@pytest.fixture(scope="module", autouse=True)
def _fetcher_image() -> None:
    found = subprocess.run(["docker", "image", "inspect", FETCHER_IMAGE], capture_output=True)
    if found.returncode != 0:
        pytest.fail(f"fetcher image {FETCHER_IMAGE} is missing (make image)", pytrace=False)


def start_fetch(tmp_path: Path, url: str, allow: list[str], fetch_id: str | None = None,
                **settings: object) -> subprocess.Popen[str]:
    config = {"scratch_dir": str(tmp_path / "scratch"), "worker_name": "sandbox-test",
              "allow": allow, **settings}
    message = FetchMessage(fetch_id=fetch_id or secrets.token_hex(16), url=url, rev="main",
                           limits=LIMITS, timeout_s=120)
    tests = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-c", _FETCH, json.dumps(config),
                             message.model_dump_json()], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": path})


def finished(proc: subprocess.Popen[str]) -> FetchReport:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    answer = json.loads(out.strip().splitlines()[-1])
    report = FetchReport.model_validate(answer["report"])
    assert answer["stored"] == (report.pack is not None)
    return report


def fetch(tmp_path: Path, url: str, allow: list[str], **settings: object) -> FetchReport:
    return finished(start_fetch(tmp_path, url, allow, **settings))


def _commit(repo: Path, files: dict[str, bytes]) -> None:
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    for name, data in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qm", "c"], check=True)
    subprocess.run(["git", "-C", str(repo), "update-server-info"], check=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("repos")
    _commit(base / "crate", {"Cargo.toml": b"[package]\nname = \"c\"\n",
                             "src/main.rs": b"fn main() {}\n"})
    _commit(base / "big", {"blob.bin": os.urandom(3 << 20)})
    return base


@pytest.fixture(scope="module")
def daemon(repos: Path) -> Iterator[str]:
    """A git daemon on loopback serving the repos: git://127.0.0.1:<port>."""
    port = _free_port()
    proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all",
                             f"--base-path={repos}", "--listen=127.0.0.1", f"--port={port}",
                             str(repos)], stderr=subprocess.DEVNULL)
    try:
        until(lambda: _connects(port), "git daemon listening", timeout=30)
        yield f"git://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class Listener:
    """A TCP server on loopback that counts connections; `silent` holds them open
    without a word until closed, else it closes each at once."""

    def __init__(self, silent: bool = False) -> None:
        self.accepted = 0
        self._silent = silent
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                if self._silent and not self._closed:
                    self._held.append(conn)
                    continue
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            held, self._held = self._held, []
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=30)
        for conn in held:
            conn.close()


def test_a_commit_is_fetched_over_git_and_over_http(tmp_path: Path, daemon: str,
                                                    repos: Path) -> None:
    report = fetch(tmp_path, f"{daemon}/crate", LOOPBACK)
    assert report.error is None, report.error
    assert report.tree is not None
    assert sorted(e.path for e in report.tree.entries) == ["Cargo.toml", "src/main.rs"]

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(repos)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        over_http = fetch(tmp_path, f"http://127.0.0.1:{server.server_port}/crate/.git",
                          LOOPBACK)
    finally:
        server.shutdown()
        server.server_close()
    assert over_http.commit == report.commit


def test_the_fetcher_has_no_network_no_farm_credentials_and_a_read_only_root(
        tmp_path: Path, daemon: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inspected while its fetch waits on a server that never answers."""
    monkeypatch.setenv("CROSSFARM_S3_SECRET_KEY", FARM_SECRET)
    monkeypatch.setenv("CROSSFARM_WORKER_TOKEN", FARM_SECRET)
    silent = Listener(silent=True)
    fetch_id = secrets.token_hex(16)
    worker = start_fetch(tmp_path, f"git://127.0.0.1:{silent.port}/crate", LOOPBACK,
                         fetch_id=fetch_id)
    try:
        label = f"io.crossfarm.job=fetch-{fetch_id}"
        until(lambda: silent.accepted > 0, "the fetch reaching the silent server", timeout=120)
        ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label={label}"],
                             capture_output=True, text=True, check=True).stdout.split()
        assert len(ids) == 1
        [info] = json.loads(subprocess.run(["docker", "inspect", ids[0]], capture_output=True,
                                           text=True, check=True).stdout)
    finally:
        silent.close()
        report = finished(worker)
    host = info["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert info["Config"]["User"] == "10001:10001"
    env = "\n".join(info["Config"]["Env"])
    assert FARM_SECRET not in env
    assert {line.split("=", 1)[0] for line in info["Config"]["Env"]} <= {
        "CROSSFARM_URL", "CROSSFARM_REV", "HOME", "PATH"}
    binds = [m for m in info["Mounts"] if m["Type"] == "bind"]
    assert [(m["Destination"], m["RW"]) for m in binds] == [("/egress", False)]
    assert report.error is not None
    assert UNREADABLE in report.error
    assert fetch(tmp_path, f"{daemon}/crate", LOOPBACK).error is None  # the next is clean


def test_a_redirect_to_another_port_is_refused_and_never_connects(
        tmp_path: Path, daemon: str) -> None:
    elsewhere = Listener()

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(301)
            self.send_header("Location", f"http://127.0.0.1:{elsewhere.port}{self.path}")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        report = fetch(tmp_path, f"http://127.0.0.1:{server.server_port}/crate.git", LOOPBACK)
    finally:
        server.shutdown()
        server.server_close()
        elsewhere.close()
    assert report.error is not None
    assert UNREADABLE in report.error
    assert elsewhere.accepted == 0
    assert fetch(tmp_path, f"{daemon}/crate", LOOPBACK).error is None


def test_a_host_that_is_not_public_is_refused_unless_the_operator_allows_it(
        tmp_path: Path) -> None:
    listener = Listener()
    try:
        report = fetch(tmp_path, f"git://127.0.0.1:{listener.port}/crate", [])
    finally:
        listener.close()
    assert report.error is not None
    assert UNREADABLE in report.error
    assert listener.accepted == 0


def test_a_fetch_past_its_byte_budget_is_cut_off(tmp_path: Path, daemon: str) -> None:
    report = fetch(tmp_path, f"{daemon}/big", LOOPBACK, git_fetch_max_bytes=1 << 20)
    assert report.error is not None
    assert UNREADABLE in report.error
    assert fetch(tmp_path, f"{daemon}/crate", LOOPBACK).error is None


def test_credentials_in_the_url_are_never_in_the_report(tmp_path: Path) -> None:
    closed = _free_port()
    report = fetch(tmp_path, f"http://alice:s3cret@127.0.0.1:{closed}/crate.git", LOOPBACK)
    assert report.error is not None
    assert "s3cret" not in report.error
    assert "alice" not in report.error


def test_a_private_repository_is_fetched_with_its_tenants_credential_only(
        farm: object, api: object, repos: Path) -> None:
    """Through the whole farm: acme registers a token for the host and fetches; bolt,
    with none, is refused the same repository, and the server never saw acme's token on
    bolt's requests."""
    import base64

    import httpx

    token = "acme-" + secrets.token_hex(16)
    expected = "Basic " + base64.b64encode(f"acme-ci:{token}".encode()).decode()
    seen: list[str | None] = []

    class Private(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object) -> None:
            super().__init__(*args, directory=str(repos))  # type: ignore[arg-type]

        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="private"')
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Private)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/crate/.git"
    operator: httpx.Client = api  # type: ignore[assignment]
    base = farm.controller_url  # type: ignore[attr-defined]
    tokens = {tenant: operator.post("/v1/admin/tokens", json={"tenant": tenant, "name": "ci"})
              .json()["token"] for tenant in ("acme-git", "bolt-git")}
    try:
        with httpx.Client(base_url=base, timeout=300,
                          headers={"Authorization": f"Bearer {tokens['acme-git']}"}) as acme, \
                httpx.Client(base_url=base, timeout=300,
                             headers={"Authorization": f"Bearer {tokens['bolt-git']}"}) as bolt:
            bolt_before = bolt.post("/v1/sources/git", json={"url": url, "rev": "main"})
            put = acme.put("/v1/git-credentials/127.0.0.1",
                           json={"username": "acme-ci", "token": token})
            assert put.status_code == 200, put.text
            fetched = acme.post("/v1/sources/git", json={"url": url, "rev": "main"})
            bolt_after = bolt.post("/v1/sources/git", json={"url": url, "rev": "main"})
    finally:
        server.shutdown()
        server.server_close()
    assert fetched.status_code == 201, fetched.text
    assert fetched.json()["files"] == 2
    for refused in (bolt_before, bolt_after):
        assert refused.status_code == 422
        assert UNREADABLE in refused.json()["detail"]
        assert token not in refused.text
    assert expected in seen  # acme's fetch presented its token
    assert seen.count(expected) == sum(1 for s in seen if s is not None)  # nobody else's
